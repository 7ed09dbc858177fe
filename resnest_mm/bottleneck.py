"""The ResNeSt bottleneck block."""
import math
from typing import List, Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer, build_plugin_layer
from mmcv.cnn.bricks.drop import DropPath
from mmengine.model import BaseModule
from torch import Tensor

from .arguments import ConfigError, check_style
from .dropblock import DropBlock2d
from .ops import checkpoint, norm_act
from .split_attention import SplitAttentionConv2d, norm_property

_PLUGIN_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


class ResNeStBottleneck(BaseModule):
    """Bottleneck whose 3x3 convolution is a split-attention convolution.

    ``(B, inplanes, H, W) -> (B, 4 * planes, ceil(H / stride), ...)``: 1x1 conv
    to ``width``, split-attention 3x3, 1x1 conv to ``4 * planes``, plus the
    (optionally downsampled) identity. The stride sits in a 3x3 average pool
    ("avd") after the split-attention conv (before it with ``avd_first``), or
    else in the 3x3 (``style='pytorch'``) or first 1x1 (``'caffe'``) conv.
    DropBlock follows ``norm1``, ``conv2.norm0`` and ``norm3``; DropPath drops
    the branch before the sum; neither exists at rate 0.

    Args:
        inplanes (int): Input channels.
        planes (int): Base width of the block; output has ``4 * planes``.
        stride (int): Stride of the block.
        dilation (int): Dilation of the 3x3 convolution.
        downsample (nn.Module, optional): Shortcut projection.
        plugins (list[dict], optional): mmcv plugins, each with ``cfg`` and
            ``position`` in ``after_conv1|after_conv2|after_conv3``.
        drop_path_rate (float): Stochastic depth rate. Default: 0.
        others: As in :class:`ResNeSt`.
    """
    expansion = 4
    norm1 = norm_property(1)
    norm3 = norm_property(3)  # the branch's last (``zero_init_residual``)

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch',
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 dcn: Optional[dict] = None,
                 plugins: Optional[List[dict]] = None,
                 groups: int = 1,
                 base_width: int = 4,
                 base_channels: int = 64,
                 radix: int = 2,
                 reduction_factor: int = 4,
                 avg_down_stride: bool = True,
                 avd_first: bool = False,
                 drop_path_rate: float = 0.,
                 dropblock_prob: float = 0.,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if style_error := check_style(style):
            raise ConfigError(style_error)
        self.inplanes = inplanes
        self.planes = planes
        self.stride = stride
        self.dilation = dilation
        self.style = style
        self.with_cp = with_cp
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.with_dcn = dcn is not None
        self.conv1_stride, self.conv2_stride = ((1, stride) if style
                                                == 'pytorch' else (stride, 1))
        self.avg_down_stride = avg_down_stride and self.conv2_stride > 1
        self.avd_first = avd_first
        width = planes if groups == 1 else math.floor(planes * base_width /
                                                      base_channels) * groups
        out_channels = planes * self.expansion

        self.conv1 = build_conv_layer(
            conv_cfg, inplanes, width, 1, stride=self.conv1_stride, bias=False)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, width, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = SplitAttentionConv2d(
            width,
            width,
            kernel_size=3,
            stride=1 if self.avg_down_stride else self.conv2_stride,
            padding=dilation,
            dilation=dilation,
            groups=groups,
            radix=radix,
            reduction_factor=reduction_factor,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            dcn=dcn,
            dropblock_prob=dropblock_prob)
        self.conv3 = build_conv_layer(
            conv_cfg, width, out_channels, 1, bias=False)
        self.norm3_name, norm3 = build_norm_layer(
            norm_cfg, out_channels, postfix=3)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        if self.avg_down_stride:
            self.avd_layer = nn.AvgPool2d(3, self.conv2_stride, padding=1)
        dropblock = dropblock_prob > 0
        self.dropblock1 = DropBlock2d(dropblock_prob) if dropblock else None
        self.dropblock3 = DropBlock2d(dropblock_prob) if dropblock else None
        self.drop_path = DropPath(
            drop_path_rate) if drop_path_rate > 0 else None

        for plugin in plugins or ():
            if plugin['position'] not in _PLUGIN_POSITIONS:
                raise ConfigError(
                    f"plugin position must be one of "
                    f"{_PLUGIN_POSITIONS}, got {plugin['position']!r}")
        self.plugin_names = {position: [] for position in _PLUGIN_POSITIONS}
        # built by position, so that the modules are in the order they run
        for plugin in sorted(
                plugins or (),
                key=lambda p: _PLUGIN_POSITIONS.index(p['position'])):
            position, cfg = plugin['position'], dict(plugin['cfg'])
            name, layer = build_plugin_layer(
                cfg,
                in_channels=out_channels
                if position == 'after_conv3' else width,
                postfix=cfg.pop('postfix', ''))
            if hasattr(self, name):
                raise ConfigError(
                    f'duplicate plugin {name}: give each a distinct postfix')
            self.add_module(name, layer)
            self.plugin_names[position].append(name)

    def _run_plugins(self, x, position):
        for name in self.plugin_names[position]:
            x = getattr(self, name)(x)
        return x

    def _residual(self, x: Tensor) -> Tensor:
        out = norm_act(self.conv1(x), self.norm1, self.relu, self.dropblock1)
        out = self._run_plugins(out, 'after_conv1')
        if self.avg_down_stride and self.avd_first:
            out = self.avd_layer(out)
        out = self.conv2(out)
        if self.avg_down_stride and not self.avd_first:
            out = self.avd_layer(out)
        out = self._run_plugins(out, 'after_conv2')
        out = self.norm3(self.conv3(out))
        if self.dropblock3 is not None:
            out = self.dropblock3(out)
        out = self._run_plugins(out, 'after_conv3')
        if self.drop_path is not None:
            out = self.drop_path(out)
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: Tensor) -> Tensor:
        """(B, inplanes, H, W) -> (B, 4 * planes, H', W')."""
        if self.with_cp and torch.is_grad_enabled():
            # non-reentrant: also saves memory when x needs no grad (after
            # frozen stages), and redraws the same DropBlock/DropPath masks
            out = checkpoint(self._residual, x)
        else:
            out = self._residual(x)
        return self.relu(out)
