"""Split-attention convolution, the core of ResNeSt (Zhang et al. 2020,
Sec. 3)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from .arguments import ConfigError
from .dependencies import require_mmcv_ops
from .dropblock import DropBlock2d
from .ops import (BatchNormBase, norm_act, spatial_mean, sync_group,
                  weighted_sum)


def norm_property(postfix: int) -> property:
    """The norm that ``build_norm_layer`` named with ``postfix`` (``bn1``,
    ``gn1``...): upstream's keys, one attribute name for every norm type."""
    name = f'norm{postfix}_name'
    return property(lambda self: getattr(self, getattr(self, name)))


class SplitAttentionConv2d(BaseModule):
    """Split-attention convolution in radix-major layout.

    One grouped conv (``groups = K * R``, cardinality ``K``, radix ``R``)
    makes R splits of ``C = channels``, stored radix-major as
    ``(B, R*C, H, W)``. Their pooled sum ``(B, C, 1, 1)`` goes through two
    grouped 1x1 "fc" convs (width ``max(in_channels * R //
    reduction_factor, 32)``) to cardinal-major logits ``(B, R*C, 1, 1)``,
    normalised over the R splits (softmax; a sigmoid when ``R == 1``). The
    output ``(B, C, H, W)`` is the attention-weighted sum of the splits.

    Upstream's function in less memory (docs/speed_and_memory.md): each split
    is pooled before the sum, and the weighted sum accumulates split by split.

    Args:
        in_channels (int): Input channels.
        channels (int): Channels ``C`` of each split and of the output.
        kernel_size, stride, padding, dilation: As in ``nn.Conv2d``.
        groups (int): Cardinality ``K``; ``channels`` must divide by it.
        radix (int): Splits ``R`` per cardinal group, at least 1.
        reduction_factor (int): Divisor of the attention width.
        conv_cfg, norm_cfg (dict): Configs of the split conv and the norms.
        dcn (dict, optional): Deformable conv config of the split conv.
        dropblock_prob (float): DropBlock rate after ``norm0``. Default: 0.
        init_cfg (dict | list[dict], optional): Initialisation config.
    """
    norm0 = norm_property(0)  # after the split convolution
    norm1 = norm_property(1)  # inside the attention MLP

    def __init__(self,
                 in_channels: int,
                 channels: int,
                 kernel_size: int,
                 stride: int = 1,
                 padding: int = 0,
                 dilation: int = 1,
                 groups: int = 1,
                 radix: int = 2,
                 reduction_factor: int = 4,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 dcn: Optional[dict] = None,
                 dropblock_prob: float = 0.,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        if radix < 1:
            raise ConfigError(f'radix must be >= 1, got {radix}')
        if channels % groups:
            raise ConfigError(
                f'channels ({channels}) must be divisible by groups ({groups})'
            )
        inter_channels = max(in_channels * radix // reduction_factor, 32)
        self.radix = radix
        self.groups = groups
        self.channels = channels
        self.with_dcn = dcn is not None
        if self.with_dcn:
            # a copy: upstream's pop hid the key from all but its first block
            dcn = dict(dcn)
            if not dcn.pop('fallback_on_stride', False):
                if conv_cfg is not None:
                    raise ConfigError('conv_cfg must be None when dcn is set')
                # now, not at the first forward: mmcv-lite has no such op
                require_mmcv_ops(f'dcn={dcn!r}')
                conv_cfg = dcn
        self.conv = build_conv_layer(
            conv_cfg,
            in_channels,
            channels * radix,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups * radix,
            bias=False)
        if hasattr(self.conv, 'conv_offset'):  # mmcv's DCN and DCNv2
            # their kernels read input, offsets and masks as NCHW-contiguous
            # whatever the strides (mmcv 2.1), so hand them contiguous ones
            self.conv.register_forward_pre_hook(_contiguous_args)
            self.conv.conv_offset.register_forward_hook(_contiguous_output)
        # postfix 0 keeps the authors' and upstream's key "bn0"
        self.norm0_name, norm0 = build_norm_layer(
            norm_cfg, channels * radix, postfix=0)
        self.add_module(self.norm0_name, norm0)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = build_conv_layer(
            None, channels, inter_channels, 1, groups=groups)
        self.norm1_name, norm1 = build_norm_layer(
            norm_cfg, inter_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.fc2 = build_conv_layer(
            None, inter_channels, channels * radix, 1, groups=groups)
        self.dropblock = DropBlock2d(
            dropblock_prob) if dropblock_prob > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> (B, C, H', W')."""
        # conv, norm, act: R splits, radix-major (B, R*C, H', W')
        splits = norm_act(self.conv(x), self.norm0, self.relu, self.dropblock)
        atten = self.attention(splits)  # (B, R, C, 1, 1)
        return weighted_sum(splits, atten, self.radix)

    def attention(self, splits: Tensor) -> Tensor:
        """Per-split channel weights: (B, R*C, H, W) -> (B, R, C, 1, 1),
        summing to 1 over R (a sigmoid gate when R == 1)."""
        batch = splits.size(0)
        gap = spatial_mean(splits).view(batch, self.radix, self.channels, 1,
                                        1).sum(1)  # (B, C, 1, 1)
        gap = self.relu(self._attention_norm(self.fc1(gap)))
        logits = self.fc2(gap)  # (B, R*C, 1, 1), cardinal-major: (K, R, C/K)
        if self.radix == 1:
            return logits.sigmoid().view(batch, 1, self.channels, 1, 1)
        atten = logits.view(batch, self.groups, self.radix, -1).softmax(2)
        return atten.transpose(1, 2).reshape(batch, self.radix, self.channels,
                                             1, 1)

    def _attention_norm(self, x: Tensor) -> Tensor:
        """``norm1`` of ``(B, D, 1, 1)``, with the running statistics where
        B == 1 in training (a batch of one has no batch statistics)."""
        norm = self.norm1
        # An fx proxy has no batch size: a traced graph calls the norm as is.
        if (self.training and not isinstance(x, torch.fx.Proxy)
                and x.size(0) == 1 and isinstance(norm, BatchNormBase)
                and norm.running_mean is not None
                and sync_group(norm) is None):
            return F.batch_norm(x, norm.running_mean, norm.running_var,
                                norm.weight, norm.bias, False, 0.0, norm.eps)
        return norm(x)


def _contiguous_args(module, args):
    return tuple(a.contiguous() for a in args)


def _contiguous_output(module, args, output):
    return output.contiguous()
