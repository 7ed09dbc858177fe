"""The ResNeSt backbone for mmdet and mmseg."""
import math
import warnings
from contextlib import nullcontext

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule, PretrainedInit, Sequential
from torch.nn.modules.batchnorm import _BatchNorm

from .architectures import STAGE_BLOCKS
from .bottleneck import ResNeStBottleneck
from .recomputed_ops import RecomputedActivations, max_pool, norm_relu, tracing
from .weights import load_pretrained


@torch.fx.wrap
def _check_input(x, in_channels):
    """Raise early on an input that is not ``(N, in_channels, H, W)``.

    Skipped under ``torch.jit.trace`` and ONNX export, which would record the
    check as a constant and warn.
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

    A drop-in superset of mmdet 3.3's and mmseg 1.2's ``ResNeSt``: it takes
    all of their arguments with the same meaning, has the same state_dict keys
    and computes the same outputs. It also builds depths 14, 26 and 269, the
    authors' "fast" variants (``avd_first``) and their ablation widths (e.g.
    ``radix=4, groups=2, base_width=40``), and fixes three upstream defects:
    ``zero_init_residual`` zeroes each block's last norm, ``train()`` and
    ``eval()`` return the module, and training with batch size 1 works (see
    :class:`SplitAttentionConv2d`).

    Shapes: ``(N, in_channels, H, W)`` -> a tuple with one
    ``(N, 4 * base_channels * 2**i, H_i, W_i)`` tensor for each ``i`` in
    ``out_indices``. The stem and each stride-2 step round up, so
    ``H_i = ceil(H / s_i)`` with ``s_i = 4 * prod(strides[:i + 1])``; e.g.
    for 225x223 and the default strides, the stages give 57x56, 29x28, 15x14
    and 8x7.

    ``out_channels`` and ``out_strides`` give, per output (in the order
    ``forward`` returns them: stage order), its channels and its stride
    ``s_i`` (dilation keeps it, so OS8/OS16 settings report 8 or 16), e.g.
    ``(256, 512, 1024, 2048)`` and ``(4, 8, 16, 32)``. A neck can be sized
    from them before any forward, as with detectron2's ``output_shape()``
    or timm's ``feature_info``, without mmdet or mmseg.

    Args:
        groups (int): Cardinality of the split-attention conv. Default: 1.
        base_width (int): Width per group when ``groups > 1``. Default: 4.
        radix (int): Splits per cardinal group, >= 1 (1 uses a sigmoid
            gate). Default: 2.
        reduction_factor (int): Divisor of the attention width, which is
            ``max(width * radix // reduction_factor, 32)``. Default: 4.
        avg_down_stride (bool): Stride the blocks by a 3x3 average pool
            ("avd") rather than by the conv. Default: True.
        avd_first (bool): Put that pool before the split-attention conv, as
            in the authors' "fast" variants. Default: False.
        depth (int): One of 14, 26, 50, 101, 152, 200, 269.
        in_channels (int): Input channels. Default: 3.
        stem_channels (int, optional): Stem output channels; ``None`` means
            ``base_channels`` (mmdet's default; mmseg's is 64).
        base_channels (int): Planes of the first stage. Default: 64.
        num_stages (int): Stages to build, 1 to 4. Default: 4.
        strides (Sequence[int]): Stride of each stage's first block.
        dilations (Sequence[int]): Dilation of each stage.
        out_indices (Sequence[int]): Stages whose outputs are returned.
        style (str): ``'pytorch'`` (stride in the 3x3) or ``'caffe'``
            (stride in the first 1x1).
        deep_stem (bool): Three 3x3 convs as stem. Default: True.
        avg_down (bool): Average-pool before the shortcut projection.
            Default: True.
        frozen_stages (int): Stages (and the stem) to freeze; -1 for none.
        conv_cfg (dict, optional): Conv config.
        norm_cfg (dict): Norm config. Default: ``dict(type='BN')``.
        norm_eval (bool): Keep BatchNorm in eval mode while training.
            Default: False (mmdet's registry entry defaults to True, as
            mmdet's ResNet does).
        dcn (dict, optional): Deformable conv config for the split conv, e.g.
            ``dict(type='DCNv2', deform_groups=2, fallback_on_stride=False)``
            (DCNv2, Zhu et al. 2019, as in the authors' strongest detector);
            its offset convs add ``conv2.conv.conv_offset.*`` keys, as
            upstream.
        stage_with_dcn (Sequence[bool]): Stages that use ``dcn``, e.g.
            ``(False, True, True, True)``.
        plugins (list[dict], optional): mmcv plugins, each with ``cfg``,
            ``position`` and optional ``stages``.
        multi_grid (Sequence[int], optional): Dilations of the last stage's
            blocks (mmseg).
        contract_dilation (bool): Halve the first block's dilation in dilated
            stages (mmseg).
        with_cp (bool): Gradient checkpointing per block.
        zero_init_residual (bool): Zero each block's last norm so blocks
            start as identities. Default: True.
        pretrained (str, optional): Deprecated; use ``init_cfg``.
        init_cfg (dict | list[dict], optional): Initialisation config.
        drop_path_rate (float): Stochastic depth (Huang et al. 2016): each
            block drops its residual branch per sample with a rate rising
            linearly over the network's blocks from 0 to ``drop_path_rate``
            (timm's rule), scaling kept branches by ``1 / (1 - rate)``.
            In [0, 1). Default: 0.
        dropblock_prob (float): DropBlock (Ghiasi et al. 2018, block size 3)
            in stages 3 and 4, where the authors' code puts it: after
            ``norm1``, the split-attention ``norm0`` and ``norm3`` of each
            block. Needs ``num_stages >= 3``. In [0, 1). Default: 0.
        recompute_activations (bool): The memory-saving training path
            (:mod:`resnest_mm.recomputed_ops`): every conv-BN-ReLU keeps the
            BN input and batch statistics instead of its output, and the
            split-attention's splits and weighted sum are rebuilt in
            backward. It acts in training with gradients, in eager mode, on
            ``BatchNorm2d`` and ``SyncBatchNorm`` (across processes where
            torch's runs: CUDA, XPU), in float32 or float64 and under
            ``torch.autocast``; elsewhere (GN, DropBlock,
            ``torch.compile``, tracing) the plain path runs.
            Outputs and gradients are the same either way; False always takes
            the plain path. Default: True.

    Both regularisers act in training only (not in stages frozen by
    ``frozen_stages``, which stay in eval mode) and, at 0, build no module:
    the module tree, state_dict and outputs are then those without them.
    """

    arch_settings = {
        depth: (ResNeStBottleneck, blocks)
        for depth, blocks in STAGE_BLOCKS.items()
    }

    def __init__(self,
                 groups=1,
                 base_width=4,
                 radix=2,
                 reduction_factor=4,
                 avg_down_stride=True,
                 *,
                 depth,
                 avd_first=False,
                 in_channels=3,
                 stem_channels=None,
                 base_channels=64,
                 num_stages=4,
                 strides=(1, 2, 2, 2),
                 dilations=(1, 1, 1, 1),
                 out_indices=(0, 1, 2, 3),
                 style='pytorch',
                 deep_stem=True,
                 avg_down=True,
                 frozen_stages=-1,
                 conv_cfg=None,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 norm_eval=False,
                 dcn=None,
                 stage_with_dcn=(False, False, False, False),
                 plugins=None,
                 multi_grid=None,
                 contract_dilation=False,
                 with_cp=False,
                 zero_init_residual=True,
                 pretrained=None,
                 init_cfg=None,
                 drop_path_rate=0.,
                 dropblock_prob=0.,
                 recompute_activations=True):
        super().__init__(init_cfg)
        if stem_channels is None:
            stem_channels = base_channels
        if depth not in self.arch_settings:
            raise ValueError(f'invalid ResNeSt depth {depth}; valid depths: '
                             f'{sorted(self.arch_settings)}')
        if not 1 <= num_stages <= 4:
            raise ValueError(f'num_stages must be 1..4, got {num_stages}')
        _check_arguments(
            radix=radix,
            groups=groups,
            num_stages=num_stages,
            strides=strides,
            dilations=dilations,
            out_indices=out_indices,
            style=style,
            frozen_stages=frozen_stages,
            deep_stem=deep_stem,
            stem_channels=stem_channels,
            dcn=dcn,
            stage_with_dcn=stage_with_dcn,
            multi_grid=multi_grid,
            last_stage_blocks=self.arch_settings[depth][1][num_stages - 1],
            drop_path_rate=drop_path_rate,
            dropblock_prob=dropblock_prob)
        if init_cfg and pretrained:
            raise ValueError(
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

        self.pretrained = pretrained
        self.zero_init_residual = zero_init_residual
        self.groups = groups
        self.base_width = base_width
        self.radix = radix
        self.reduction_factor = reduction_factor
        self.avg_down_stride = avg_down_stride
        self.avd_first = avd_first
        self.depth = depth
        self.in_channels = in_channels
        self.stem_channels = stem_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.strides = strides
        self.dilations = dilations
        self.out_indices = out_indices
        self.style = style
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.frozen_stages = frozen_stages
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.dcn = dcn
        self.stage_with_dcn = stage_with_dcn
        self.plugins = plugins
        self.multi_grid = multi_grid
        self.contract_dilation = contract_dilation
        self.drop_path_rate = drop_path_rate
        self.dropblock_prob = dropblock_prob
        self.recompute_activations = recompute_activations
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]

        self._make_stem_layer(in_channels, stem_channels)
        self.inplanes = stem_channels
        self.res_layers = []
        # Stochastic depth rises linearly over all blocks of the network
        # (timm's rule).
        drop_path_rates = torch.linspace(0, drop_path_rate,
                                         sum(self.stage_blocks)).split(
                                             self.stage_blocks)
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            last = i == num_stages - 1
            res_layer = self.make_res_layer(
                inplanes=self.inplanes,
                planes=planes,
                num_blocks=num_blocks,
                stride=strides[i],
                dilation=dilations[i],
                multi_grid=multi_grid if last else None,
                drop_path_rates=drop_path_rates[i].tolist(),
                dcn=dcn if stage_with_dcn[i] else None,
                plugins=self.make_stage_plugins(plugins, i)
                if plugins else None,
                # stages 3 and 4 only, as in the authors' resnet.py
                dropblock_prob=dropblock_prob if i >= 2 else 0.,
                init_cfg=block_init_cfg)
            self.inplanes = planes * self.block.expansion
            layer_name = f'layer{i + 1}'
            self.add_module(layer_name, res_layer)
            self.res_layers.append(layer_name)

        self._freeze_stages()
        self.feat_dim = self.block.expansion * base_channels * 2**(
            len(self.stage_blocks) - 1)

    def make_stage_plugins(self, plugins, stage_idx):
        """The plugin configs (without ``stages``) that apply to one stage."""
        stage_plugins = []
        for plugin in plugins:
            plugin = dict(plugin)
            stages = plugin.pop('stages', None)
            if stages is not None and len(stages) != self.num_stages:
                raise ValueError(f'plugin stages {stages} must have one entry '
                                 f'per stage ({self.num_stages})')
            if stages is None or stages[stage_idx]:
                stage_plugins.append(plugin)
        return stage_plugins

    def make_res_layer(self, inplanes, planes, num_blocks, stride, dilation,
                       multi_grid, drop_path_rates, **block_kwargs):
        """One stage: ``num_blocks`` bottlenecks, the first with the stride and
        shortcut.

        ``drop_path_rates`` gives each block's stochastic depth rate.

        Written here rather than taken from mmdet's or mmseg's ``ResLayer``:
        they differ (mmseg adds ``multi_grid``/``contract_dilation``) and
        either package may be absent.
        """
        block = self.block
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            # Layers appended in upstream's order so keys stay downsample.{1,2}
            # with avg_down (the pool is an identity when stride is 1).
            layers = []
            conv_stride = stride
            if self.avg_down:
                conv_stride = 1
                layers.append(
                    nn.AvgPool2d(
                        stride,
                        stride,
                        ceil_mode=True,
                        count_include_pad=False))
            layers += [
                build_conv_layer(
                    self.conv_cfg,
                    inplanes,
                    planes * block.expansion,
                    1,
                    stride=conv_stride,
                    bias=False),
                build_norm_layer(self.norm_cfg, planes * block.expansion)[1]
            ]
            downsample = nn.Sequential(*layers)

        if multi_grid is not None:
            block_dilations = list(multi_grid)
        else:
            first = ((dilation // 2)
                     if self.contract_dilation and dilation > 1 else dilation)
            block_dilations = [first] + [dilation] * (num_blocks - 1)
        blocks = []
        for i, (block_dilation, drop_path_rate) in enumerate(
                zip(block_dilations, drop_path_rates, strict=True)):
            blocks.append(
                block(
                    inplanes=inplanes if i == 0 else planes * block.expansion,
                    planes=planes,
                    stride=stride if i == 0 else 1,
                    dilation=block_dilation,
                    downsample=downsample if i == 0 else None,
                    style=self.style,
                    with_cp=self.with_cp,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    groups=self.groups,
                    base_width=self.base_width,
                    base_channels=self.base_channels,
                    radix=self.radix,
                    reduction_factor=self.reduction_factor,
                    avg_down_stride=self.avg_down_stride,
                    avd_first=self.avd_first,
                    drop_path_rate=drop_path_rate,
                    recompute_activations=self.recompute_activations,
                    **block_kwargs))
        return Sequential(*blocks)

    def _out_stages(self):
        """The stages ``forward`` returns, in its order (stage order)."""
        return [
            i for i in range(len(self.res_layers)) if i in self.out_indices
        ]

    @property
    def out_channels(self):
        """tuple[int]: each output's channels, ``4 * base_channels * 2**i``."""
        return tuple(self.block.expansion * self.base_channels * 2**i
                     for i in self._out_stages())

    @property
    def out_strides(self):
        """tuple[int]: input-to-output size ratio of each output.

        4 for the stem, times each stage's stride; dilated stages keep it.
        """
        strides = [
            4 * math.prod(self.strides[:i + 1])
            for i in range(len(self.res_layers))
        ]
        return tuple(strides[i] for i in self._out_stages())

    @property
    def norm1(self):
        """nn.Module: the stem norm when ``deep_stem=False``."""
        return getattr(self, self.norm1_name)

    def _make_stem_layer(self, in_channels, stem_channels):
        if self.deep_stem:
            half = stem_channels // 2

            def conv_bn_relu(cin, cout, stride):
                return [
                    build_conv_layer(
                        self.conv_cfg,
                        cin,
                        cout,
                        3,
                        stride=stride,
                        padding=1,
                        bias=False),
                    build_norm_layer(self.norm_cfg, cout)[1],
                    nn.ReLU(inplace=True)
                ]

            self.stem = nn.Sequential(*conv_bn_relu(in_channels, half, 2),
                                      *conv_bn_relu(half, half, 1),
                                      *conv_bn_relu(half, stem_channels, 1))
        else:
            self.conv1 = build_conv_layer(
                self.conv_cfg,
                in_channels,
                stem_channels,
                7,
                stride=2,
                padding=3,
                bias=False)
            self.norm1_name, norm1 = build_norm_layer(
                self.norm_cfg, stem_channels, postfix=1)
            self.add_module(self.norm1_name, norm1)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def init_weights(self):
        """Initialise as ``init_cfg`` says; ``Pretrained`` loads through
        :mod:`resnest_mm.weights`.

        mmengine's ``PretrainedInit`` loads with ``strict=False`` and only logs
        mismatched keys, so weights in another layout would leave the backbone
        at its random initialisation.
        :func:`~resnest_mm.weights.load_pretrained` converts any known layout,
        checks the architecture and refuses missing weights. Other entries
        (e.g. ``Kaiming``) still run first.
        """
        cfgs = self.init_cfg if isinstance(self.init_cfg,
                                           list) else [self.init_cfg]
        pretrained = [
            c for c in cfgs
            if c and c['type'] in ('Pretrained', PretrainedInit)
        ]
        if self.is_init or not pretrained:
            return super().init_weights()
        init_cfg, self.init_cfg = self.init_cfg, [
            c for c in cfgs if c not in pretrained
        ]
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
            frozen = stem + [
                getattr(self, f'layer{i}')
                for i in range(1, self.frozen_stages + 1)
            ]
            for m in frozen:
                m.eval()
                for param in m.parameters():
                    param.requires_grad = False

    def forward(self, x):
        """(N, in_channels, H, W) -> tuple of the ``out_indices`` stage
        outputs."""
        x = _check_input(x, self.in_channels)
        recompute = self.recompute_activations
        rebuild = (
            recompute and self.training and torch.is_grad_enabled()
            and not tracing(x))
        with RecomputedActivations() if rebuild else nullcontext():
            if self.deep_stem:  # (conv, norm, relu) x 3
                for i in range(0, len(self.stem), 3):
                    x, _ = norm_relu(
                        self.stem[i](x),
                        self.stem[i + 1],
                        self.stem[i + 2],
                        recompute=recompute)
            else:
                x, _ = norm_relu(
                    self.conv1(x), self.norm1, self.relu, recompute=recompute)
            x = max_pool(x, self.maxpool, recompute=rebuild)
            outs = []
            for i, layer_name in enumerate(self.res_layers):
                x = getattr(self, layer_name)(x)
                if i in self.out_indices:
                    outs.append(x)
        return tuple(outs)

    def train(self, mode=True):
        """Set train mode, keeping frozen stages (and BN with ``norm_eval``) in
        eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def _check_arguments(*, radix, groups, num_stages, strides, dilations,
                     out_indices, style, frozen_stages, deep_stem,
                     stem_channels, dcn, stage_with_dcn, multi_grid,
                     last_stage_blocks, drop_path_rate, dropblock_prob):
    """Reject a bad configuration at construction, naming the valid values."""
    errors = []
    if radix < 1:
        errors.append(f'radix must be >= 1 (1 = sigmoid gate), got {radix}')
    if groups < 1:
        errors.append(f'groups must be >= 1, got {groups}')
    if len(strides) != num_stages or len(dilations) != num_stages:
        errors.append(
            f'strides {tuple(strides)} and dilations {tuple(dilations)} must '
            f'each have num_stages={num_stages} entries')
    valid_indices = tuple(range(num_stages))
    if not out_indices or any(i not in valid_indices for i in out_indices):
        errors.append(f'out_indices {tuple(out_indices)} must be a non-empty '
                      f'subset of {valid_indices} (num_stages={num_stages})')
    if style not in ('pytorch', 'caffe'):
        errors.append(f"style must be 'pytorch' or 'caffe', got {style!r}")
    if not -1 <= frozen_stages <= num_stages:
        errors.append(
            f'frozen_stages must be in -1..{num_stages}, got {frozen_stages}')
    if deep_stem and stem_channels % 2:
        errors.append(
            f'stem_channels must be even with deep_stem, got {stem_channels}')
    if dcn is not None and len(stage_with_dcn) != num_stages:
        errors.append(f'stage_with_dcn {tuple(stage_with_dcn)} must have '
                      f'num_stages={num_stages} entries')
    if multi_grid is not None and len(multi_grid) != last_stage_blocks:
        errors.append(
            f'multi_grid {tuple(multi_grid)} must give one dilation per '
            f'block of the last stage ({last_stage_blocks} blocks)')
    if not 0 <= drop_path_rate < 1:
        errors.append(
            f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
    if not 0 <= dropblock_prob < 1:
        errors.append(
            f'dropblock_prob must be in [0, 1), got {dropblock_prob}')
    elif dropblock_prob > 0 and num_stages < 3:
        errors.append(f'dropblock_prob applies to stages 3 and 4, but '
                      f'num_stages={num_stages}')
    if errors:
        raise ValueError('invalid ResNeSt config: ' + '; '.join(errors))
