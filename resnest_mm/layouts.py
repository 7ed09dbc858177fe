"""Checkpoint layouts: which one a checkpoint is in (a :class:`Layout` record
each in ``LAYOUTS``), and its backbone in our keys (mmdet's, mmseg's)."""
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

StateDict = dict[str, Any]


@dataclass(frozen=True)
class KeyScheme:
    """How one implementation names a ResNeSt's keys."""
    name: str
    # keys every backbone of it has: its first stem conv, and layer1's first
    # split-attention conv (a ResNet's 3x3 conv is conv2.weight)
    markers: tuple[str, ...]
    rename: Callable[[StateDict], StateDict]  # its backbone's keys -> ours
    classifier: tuple[str, ...] = ()  # key prefixes of its classifier


@dataclass(frozen=True)
class Layout:
    """A key scheme at a prefix, as found in real checkpoints."""
    prefix: str  # where the backbone's keys sit
    scheme: KeyScheme
    name: str  # as logged and reported
    keys: str  # example keys, listed when a checkpoint fits no layout

    def found_in(self, state_dict: Mapping[str, Any]) -> bool:
        return all(self.prefix + key in state_dict
                   for key in self.scheme.markers)


@dataclass
class Converted:
    """A checkpoint's backbone in our keys, and where it came from."""
    state_dict: StateDict
    layout: str  # the found layout's name
    prefix: str  # where the backbone's keys sat, e.g. 'backbone.'
    scheme: str  # the KeyScheme's name
    dropped: list[str]  # source keys that are not backbone weights


def _rename_authors(state_dict: StateDict) -> StateDict:
    """``conv1.*`` is their deep stem, ``bn1`` its last norm."""
    stem = {'conv1.': 'stem.', 'bn1.': 'stem.7.'}
    return {
        re.sub(r'^(conv1|bn1)\.', lambda m: stem[m[0]], k): v
        for k, v in state_dict.items()
    }


def _rename_mmpretrain(state_dict: StateDict) -> StateDict:
    """mmpretrain's stem is three ConvModules, and a shortcut without its
    avg pool (stride 1) numbers conv and norm 0, 1; ours has them at 1, 2."""
    no_pool = {
        k.split('.downsample.')[0]
        for k in state_dict if '.downsample.0.' in k
    }
    out = {}
    for key, value in state_dict.items():
        match = re.match(r'stem\.(\d)\.(conv|bn)\.(.*)', key)
        if match:
            index, kind, rest = match.groups()
            key = f'stem.{3 * int(index) + (kind == "bn")}.{rest}'
        else:
            block, sep, rest = key.partition('.downsample.')
            if sep and block in no_pool:
                index, rest = rest.split('.', 1)
                key = f'{block}.downsample.{int(index) + 1}.{rest}'
        out[key] = value
    return out


# detectron2's names (a conv owns its norm as ``.norm``) -> ours, within a
# block of stage resN (our layer N-1).
_DETECTRON2_BLOCK = (
    ('conv1.norm.', 'bn1.'),
    ('conv3.norm.', 'bn3.'),
    ('shortcut.norm.', 'downsample.2.'),
    ('shortcut.', 'downsample.1.'),  # after its norm: a prefix of it
    ('conv2_offset.', 'conv2.conv.conv_offset.'),  # DCN offsets
)


def _rename_detectron2(state_dict: StateDict) -> StateDict:
    """``stem.conv1_{1,2,3}`` (and ``.norm``) are our ``stem.0/1``, ``3/4``,
    ``6/7``; ``resN`` is ``layerN-1``; a DCN offset conv, grouped by
    deformable group, becomes mmcv's dense one."""
    out = {}
    for key, value in state_dict.items():
        stem = re.match(r'stem\.conv1_(\d)\.(norm\.)?(.*)', key)
        block = re.match(r'res(\d)\.(\d+)\.(.*)', key)
        if stem:
            index, norm, rest = stem.groups()
            key = f'stem.{3 * (int(index) - 1) + bool(norm)}.{rest}'
        elif block:
            stage, index, rest = block.groups()
            for theirs, ours in _DETECTRON2_BLOCK:
                if rest.startswith(theirs):
                    rest = ours + rest[len(theirs):]
                    break
            key = f'layer{int(stage) - 1}.{index}.{rest}'
        out[key] = value
    for key in out:
        if key.endswith('conv2.conv.conv_offset.weight'):
            conv1 = out[key.replace('conv2.conv.conv_offset', 'conv1')]
            out[key] = _densify_offset_conv(out[key], conv1.shape[0])
    return out


def _densify_offset_conv(weight, in_channels):
    """A grouped conv's weight ``(out, in / groups, kh, kw)`` as the equal
    dense conv's ``(out, in, kh, kw)``: zero between groups."""
    groups = in_channels // weight.shape[1]
    block = weight.new_ones(weight.shape[0] // groups, weight.shape[1])
    diagonal = torch.block_diag(*[block] * groups)  # (out, in)
    return weight.repeat(1, groups, 1, 1) * diagonal[..., None, None]


_SPLIT_ATTENTION = 'layer1.0.conv2.conv.weight'
# ours is also mmdet's and mmseg's ResNeSt (a copy: nothing to rename)
OURS = KeyScheme('ours', ('stem.0.weight', _SPLIT_ATTENTION), dict)
MMPRETRAIN = KeyScheme('mmpretrain', ('stem.0.conv.weight', _SPLIT_ATTENTION),
                       _rename_mmpretrain)
AUTHORS = KeyScheme('authors', ('conv1.0.weight', _SPLIT_ATTENTION),
                    _rename_authors, ('fc.', ))
# the authors' detectron2 fork (zhanghang1989/detectron2-ResNeSt,
# detectron2/modeling/backbone/resnet.py and splat.py)
DETECTRON2 = KeyScheme('detectron2',
                       ('stem.conv1_1.weight', 'res2.0.conv2.conv.weight'),
                       _rename_detectron2, ('linear.', ))

# In the order they are tried. A detectron2 model's FPN backbone wraps the
# ResNet as ``bottom_up``.
LAYOUTS = (
    Layout(
        '', AUTHORS, "authors' release / timm",
        'conv1.0.weight, bn1.weight, layer1.0.conv2.conv.weight, '
        'fc.weight'),
    Layout(
        'backbone.', MMPRETRAIN, 'mmpretrain classifier',
        'backbone.stem.0.conv.weight, '
        'backbone.layer1.0.conv2.conv.weight, head.fc.weight'),
    Layout(
        'backbone.', OURS, 'mmdet/mmseg model',
        'backbone.stem.0.weight, backbone.layer1.0.conv2.conv.weight, '
        'neck.*, rpn_head.* / roi_head.* / decode_head.*'),
    Layout(
        '', OURS, "ours (resnest_mm, an mmdet/mmseg ResNeSt backbone, "
        "OpenMMLab's open-mmlab://resnest* files)",
        'stem.0.weight, layer1.0.conv2.conv.weight'),
    Layout(
        'backbone.bottom_up.', DETECTRON2,
        "detectron2 model (the authors' resnest*_detectron ImageNet "
        'files, detectron2-ResNeSt detectors)',
        'backbone.bottom_up.stem.conv1_1.weight, '
        'backbone.bottom_up.res2.0.conv2.conv.weight, '
        'backbone.fpn_*, roi_heads.*'),
    Layout(
        '', DETECTRON2, 'detectron2 ResNeSt backbone',
        'stem.conv1_1.weight, stem.conv1_1.norm.weight, '
        'res2.0.conv2.conv.weight, res2.0.shortcut.norm.weight'),
)


def convert_checkpoint(checkpoint: Any,
                       prefix: str | None = None) -> Converted:
    """Find the layout of a loaded checkpoint (see :func:`state_dict_of`)
    and return its backbone in our keys; ``prefix``: where the backbone sits
    if neither at the top nor under ``backbone.``. Raises ``ValueError``
    listing the known layouts if none fits."""
    state_dict = state_dict_of(checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(
            f'expected a state dict, got a {type(checkpoint).__name__}. ' +
            _expected_layouts())
    layout = next((c for c in _candidates(prefix) if c.found_in(state_dict)),
                  None)
    if layout is None:
        sample = ', '.join(list(state_dict)[:6])
        raise ValueError(f'unknown checkpoint layout (first keys: {sample}). '
                         f'{_expected_layouts()}')
    ours, dropped = {}, []
    for key, value in state_dict.items():
        inner = key[len(layout.prefix):]
        if (key.startswith(layout.prefix)
                and not inner.startswith(layout.scheme.classifier)):
            ours[inner] = value
        else:
            dropped.append(key)
    return Converted(
        layout.scheme.rename(ours), layout.name, layout.prefix,
        layout.scheme.name, dropped)


def _candidates(prefix: str | None) -> list[Layout]:
    """The records (at ``prefix``, if given), then each key scheme at
    ``prefix`` or at each known prefix."""
    named = [
        known for known in LAYOUTS if not prefix or known.prefix == prefix
    ]
    # dicts: each once, in the records' order
    prefixes = dict.fromkeys(
        [prefix] if prefix else [known.prefix for known in named])
    schemes = dict.fromkeys(known.scheme for known in LAYOUTS)
    return named + [
        Layout(where, scheme, f'{scheme.name} keys under {where!r}', '')
        for where in prefixes for scheme in schemes
    ]


def state_dict_of(checkpoint: Any) -> StateDict | None:
    """The state dict in a loaded checkpoint: itself, or the one under
    ``'state_dict'`` (mmengine) or ``'model'`` (detectron2)."""
    if not isinstance(checkpoint, dict):
        return None
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def _expected_layouts() -> str:
    rows = '; '.join(f'{layout.name}: {layout.keys}' for layout in LAYOUTS)
    return ('Expected the weights of a ResNeSt (at the top, or under '
            f'"state_dict" or "model") in one of these layouts: {rows}.')
