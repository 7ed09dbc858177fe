"""The ResNeSt backbone for mmdet and mmseg."""
import math
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule, PretrainedInit, Sequential
from torch import Tensor

from .architectures import STAGE_BLOCKS
from .arguments import ConfigError, check_arguments
from .bottleneck import ResNeStBottleneck
from .ops import BatchNormBase, MaxPool2d, memory_saving, norm_act
from .split_attention import norm_property
from .stem import DeepStem
from .weights import load_pretrained

# the backbone's arguments that each block takes as they are
_BLOCK_ARGS = ('style', 'with_cp', 'conv_cfg', 'norm_cfg', 'groups',
               'base_width', 'base_channels', 'radix', 'reduction_factor',
               'avg_down_stride', 'avd_first')
# the arguments kept as attributes of the same name, as mmdet's ResNet does
_STORED_ARGS = _BLOCK_ARGS + (
    'zero_init_residual', 'depth', 'in_channels', 'stem_channels',
    'num_stages', 'strides', 'dilations', 'out_indices', 'deep_stem',
    'avg_down', 'frozen_stages', 'norm_eval', 'stage_with_dcn', 'plugins',
    'multi_grid', 'contract_dilation', 'drop_path_rate', 'dropblock_prob',
    'recompute_activations')


@torch.fx.wrap
def _check_input(x: Tensor, in_channels: int) -> Tensor:
    """Refuse an input that is not ``(N, in_channels, H, W)``; skipped when
    tracing (``torch.jit.trace``, ONNX), which would record it as a constant.
    """
    if not torch.jit.is_tracing() and (x.dim() != 4
                                       or x.size(1) != in_channels):
        raise ValueError(
            f'ResNeSt expects a 4-D input (N, {in_channels}, H, W), got shape '
            f'{tuple(x.shape)}. Batch single images with x[None] and check '
            f'the in_channels argument ({in_channels}).')
    return x


class ResNeSt(BaseModule):
    """ResNeSt backbone (`Split-Attention Networks
    <https://arxiv.org/abs/2004.08955>`_).

    A superset of mmdet 3.3's and mmseg 1.2's ``ResNeSt``: their arguments,
    state_dict keys and outputs, plus depths 14, 26 and 269, the authors'
    "fast" variants and ablation widths, stochastic depth, DropBlock and a
    memory-saving training path. Where it differs from upstream, and why:
    docs/configs_and_training.md.

    ``(N, in_channels, H, W)`` -> one ``(N, 4 * base_channels * 2**i, H_i,
    W_i)`` map per ``i`` in ``out_indices``, ``H_i = ceil(H / s_i)`` with
    ``s_i = 4 * prod(strides[:i + 1])``. ``out_channels`` and
    ``out_strides`` size a neck before any forward.

    Args:
        groups (int): Cardinality of the split-attention conv. Default: 1.
        base_width (int): Width per group when ``groups > 1``. Default: 4.
        radix (int): Splits per cardinal group; 1 uses a sigmoid gate.
        reduction_factor (int): Divisor of the attention width. Default: 4.
        avg_down_stride (bool): Stride blocks by a 3x3 average pool ("avd").
        avd_first (bool): Put that pool before the split-attention conv.
        depth (int): One of 14, 26, 50, 101, 152, 200, 269.
        in_channels (int): Input channels. Default: 3.
        stem_channels (int, optional): Stem width; None: ``base_channels``.
        base_channels (int): Planes of the first stage. Default: 64.
        num_stages (int): Stages to build, 1 to 4. Default: 4.
        strides, dilations (Sequence[int]): Each stage's.
        out_indices (Sequence[int]): Stages whose outputs are returned.
        style (str): 'pytorch' (stride in the 3x3) or 'caffe' (in the 1x1).
        deep_stem (bool): Three 3x3 convs as stem. Default: True.
        avg_down (bool): Average-pool before the shortcut projection.
        frozen_stages (int): Stages (and the stem) to freeze; -1 for none.
        conv_cfg, norm_cfg (dict): Layer configs as in mmcv.
        norm_eval (bool): Keep BatchNorm in eval mode while training.
        dcn (dict, optional): Deformable conv config of the split conv.
        stage_with_dcn (Sequence[bool]): Stages that use ``dcn``.
        plugins (list[dict], optional): mmcv plugins, each with ``cfg``,
            ``position`` and optional ``stages``.
        multi_grid (Sequence[int], optional): Last stage's block dilations.
        contract_dilation (bool): Halve the first dilation of dilated stages.
        with_cp (bool): Gradient checkpointing per block.
        zero_init_residual (bool): Zero each block's last norm. Default: True.
        pretrained (str, optional): Deprecated; use ``init_cfg``.
        init_cfg (dict | list[dict], optional): Initialisation config.
        drop_path_rate (float): Stochastic depth, rising linearly over the
            blocks to this rate. Default: 0.
        dropblock_prob (float): DropBlock rate in stages 3 and 4. Default: 0.
        recompute_activations (bool): The memory-saving path of
            :mod:`resnest_mm.ops` (same outputs and gradients). Default: True.
    """

    arch_settings = {
        depth: (ResNeStBottleneck, blocks)
        for depth, blocks in STAGE_BLOCKS.items()
    }
    norm1 = norm_property(1)  # the stem norm when ``deep_stem=False``

    def __init__(self,
                 groups: int = 1,
                 base_width: int = 4,
                 radix: int = 2,
                 reduction_factor: int = 4,
                 avg_down_stride: bool = True,
                 *,
                 depth: int,
                 avd_first: bool = False,
                 in_channels: int = 3,
                 stem_channels: Optional[int] = None,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'pytorch',
                 deep_stem: bool = True,
                 avg_down: bool = True,
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 dcn: Optional[dict] = None,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 plugins: Optional[List[dict]] = None,
                 multi_grid: Optional[Sequence[int]] = None,
                 contract_dilation: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 drop_path_rate: float = 0.,
                 dropblock_prob: float = 0.,
                 recompute_activations: bool = True):
        super().__init__(init_cfg)
        if stem_channels is None:
            stem_channels = base_channels
        if init_cfg and pretrained:
            raise ConfigError(
                'init_cfg and pretrained cannot be set at the same time; '
                'use init_cfg=dict(type="Pretrained", checkpoint=...)')
        block_init_cfg = None
        if isinstance(pretrained, str):
            warnings.warn('pretrained is deprecated, use init_cfg=dict('
                          'type="Pretrained", checkpoint=...) instead')
            self.init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        elif pretrained is not None:
            raise TypeError(
                f'pretrained must be a str or None, got {type(pretrained)}')
        elif init_cfg is None:
            self.init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(
                    type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
            if zero_init_residual:
                block_init_cfg = dict(
                    type='Constant', val=0, override=dict(name='norm3'))

        args = locals()
        for name in _STORED_ARGS:
            setattr(self, name, args[name])
        check_arguments(self, dcn)
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]

        if deep_stem:
            self.stem = DeepStem(in_channels, stem_channels, conv_cfg,
                                 norm_cfg)
        else:
            self.conv1 = build_conv_layer(
                conv_cfg, in_channels, stem_channels, 7, 2, 3, bias=False)
            self.norm1_name, norm1 = build_norm_layer(
                norm_cfg, stem_channels, postfix=1)
            self.add_module(self.norm1_name, norm1)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = stem_channels
        self.res_layers = []
        # timm's rule: the rate rises linearly over all blocks
        drop_path_rates = torch.linspace(0, drop_path_rate,
                                         sum(self.stage_blocks)).split(
                                             self.stage_blocks)
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            res_layer = self.make_res_layer(
                inplanes=self.inplanes,
                planes=planes,
                num_blocks=num_blocks,
                stride=strides[i],
                dilation=dilations[i],
                multi_grid=multi_grid if i == num_stages - 1 else None,
                drop_path_rates=drop_path_rates[i].tolist(),
                dcn=dcn if stage_with_dcn[i] else None,
                plugins=self.make_stage_plugins(plugins or [], i),
                # stages 3 and 4 only, as in the authors' resnet.py
                dropblock_prob=dropblock_prob if i >= 2 else 0.,
                init_cfg=block_init_cfg)
            self.inplanes = planes * self.block.expansion
            layer_name = f'layer{i + 1}'
            self.add_module(layer_name, res_layer)
            self.res_layers.append(layer_name)

        self._freeze_stages()

    def make_stage_plugins(self, plugins: List[dict],
                           stage_idx: int) -> List[dict]:
        """The plugin configs (without ``stages``) that apply to one stage."""
        stage_plugins = []
        for plugin in plugins:
            plugin = dict(plugin)
            stages = plugin.pop('stages', None)
            if stages is not None and len(stages) != self.num_stages:
                raise ConfigError(
                    f'plugin stages {stages} must have one entry '
                    f'per stage ({self.num_stages})')
            if stages is None or stages[stage_idx]:
                stage_plugins.append(plugin)
        return stage_plugins

    def make_res_layer(self, inplanes: int, planes: int, num_blocks: int,
                       stride: int, dilation: int,
                       multi_grid: Optional[Sequence[int]],
                       drop_path_rates: Sequence[float],
                       **block_kwargs) -> Sequential:
        """One stage: ``num_blocks`` bottlenecks, the first with the stride and
        the shortcut, each with its ``drop_path_rates`` entry.

        Not mmdet's or mmseg's ``ResLayer``: they differ (mmseg's adds
        ``multi_grid``/``contract_dilation``) and either may be absent.
        """
        out_channels = planes * self.block.expansion
        downsample = None
        if stride != 1 or inplanes != out_channels:
            # upstream's order, so that the keys stay downsample.{1,2} with
            # avg_down (the pool is an identity at stride 1)
            pool = [
                nn.AvgPool2d(
                    stride, stride, ceil_mode=True, count_include_pad=False)
            ] if self.avg_down else []
            downsample = nn.Sequential(
                *pool,
                build_conv_layer(
                    self.conv_cfg,
                    inplanes,
                    out_channels,
                    1,
                    stride=1 if self.avg_down else stride,
                    bias=False),
                build_norm_layer(self.norm_cfg, out_channels)[1])

        if multi_grid is not None:
            block_dilations = list(multi_grid)
        else:
            first = ((dilation // 2)
                     if self.contract_dilation and dilation > 1 else dilation)
            block_dilations = [first] + [dilation] * (num_blocks - 1)
        block_kwargs.update(
            {name: getattr(self, name)
             for name in _BLOCK_ARGS})
        return Sequential(*[
            self.block(
                inplanes=inplanes if i == 0 else out_channels,
                planes=planes,
                stride=stride if i == 0 else 1,
                dilation=block_dilation,
                downsample=downsample if i == 0 else None,
                drop_path_rate=drop_path_rate,
                **block_kwargs)
            for i, (block_dilation, drop_path_rate) in enumerate(
                zip(block_dilations, drop_path_rates, strict=True))
        ])

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """tuple[int]: each output's channels, ``4 * base_channels * 2**i``."""
        return tuple(self.block.expansion * self.base_channels * 2**i
                     for i in sorted(self.out_indices))

    @property
    def out_strides(self) -> Tuple[int, ...]:
        """tuple[int]: input-to-output size ratio of each output, e.g.
        ``(4, 8, 16, 32)``; dilated stages keep it (OS8 settings report 8)."""
        return tuple(4 * math.prod(self.strides[:i + 1])
                     for i in sorted(self.out_indices))

    def init_weights(self):
        """Initialise as ``init_cfg`` says, ``Pretrained`` through
        :func:`~resnest_mm.weights.load_pretrained`, which converts any known
        layout and refuses missing weights (mmengine's ``PretrainedInit``
        loads with ``strict=False`` and only logs them)."""
        init_cfg = self.init_cfg
        cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        pretrained = [
            c for c in cfgs
            if c and c['type'] in ('Pretrained', PretrainedInit)
        ]
        if self.is_init or not pretrained:
            return super().init_weights()
        self.init_cfg = [c for c in cfgs if c not in pretrained]
        try:
            super().init_weights()
        finally:
            self.init_cfg = init_cfg
        for cfg in pretrained:
            load_pretrained(
                self,
                cfg['checkpoint'],
                prefix=cfg.get('prefix'),
                map_location=cfg.get('map_location', 'cpu'))

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            stem = [self.stem] if self.deep_stem else [self.conv1, self.norm1]
            stages = self.res_layers[:self.frozen_stages]
            for m in stem + [getattr(self, name) for name in stages]:
                m.eval().requires_grad_(False)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(N, in_channels, H, W) -> the ``out_indices`` stage outputs."""
        x = _check_input(x, self.in_channels)
        # the one place that decides whether the memory-saving path acts
        with memory_saving(x, self.recompute_activations and self.training):
            if self.deep_stem:
                x = self.stem(x)
            else:
                x = norm_act(self.conv1(x), self.norm1, self.relu)
            x = self.maxpool(x)
            outs = []
            for i, layer_name in enumerate(self.res_layers):
                x = getattr(self, layer_name)(x)
                if i in self.out_indices:
                    outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'ResNeSt':
        """Set train mode, keeping frozen stages (and BN with ``norm_eval``) in
        eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, BatchNormBase):
                    m.eval()
        return self
