"""Blocks per stage and stem width of each ResNeSt depth, and the architecture
a state dict (our keys) was made by, checked against a model."""
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .backbone import ResNeSt

# depth: bottleneck blocks in stages 1-4 (Zhang et al. 2020, and the
# authors' ablation depths 14 and 26).
STAGE_BLOCKS = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    269: (3, 30, 48, 8),
}

# depth: the authors' deep-stem output channels (twice their stem_width;
# resnest/torch/resnest.py, timm's resnest14d/26d).
STEM_CHANNELS = {depth: 64 if depth <= 50 else 128 for depth in STAGE_BLOCKS}

_DEPTHS = {blocks: depth for depth, blocks in STAGE_BLOCKS.items()}


@dataclass(frozen=True)
class Architecture:
    """What a state dict in our keys says about the network that made it."""
    stage_blocks: tuple[int, ...]
    stem_channels: int | None  # None: no deep stem in the checkpoint
    radix: int
    groups: int
    width: int  # channels of layer1's split-attention conv (per split)

    @property
    def depth(self) -> int | None:
        """The depth with these blocks per stage, or None."""
        return _DEPTHS.get(self.stage_blocks)

    @property
    def name(self) -> str:
        return (f'ResNeSt-{self.depth}' if self.depth else
                f'a ResNeSt with {self.stage_blocks} blocks per stage')


def read_architecture(state_dict: Mapping[str, Any]) -> Architecture:
    """Blocks per stage, stem width, radix, groups and width, read from tensor
    shapes (our keys)."""
    blocks = Counter()
    for key in state_dict:
        match = re.match(r'layer(\d+)\.(\d+)\.conv1\.weight$', key)
        if match:
            blocks[int(match.group(1))] += 1
    width = state_dict['layer1.0.conv1.weight'].shape[0]  # (width, in, 1, 1)
    # (width * radix, width / (groups * radix), 3, 3)
    split = state_dict['layer1.0.conv2.conv.weight']
    radix = split.shape[0] // width
    stem = state_dict.get('stem.6.weight')
    return Architecture(
        stage_blocks=tuple(blocks[i] for i in sorted(blocks)),
        stem_channels=stem.shape[0] if stem is not None else None,
        radix=radix,
        groups=width // (split.shape[1] * radix),
        width=width)


def check_architecture(arch: Architecture, model: 'ResNeSt') -> None:
    """Raise ``ValueError`` naming each way ``arch`` does not fit ``model``,
    and the fix."""
    problems = []
    for stage, (theirs, ours) in enumerate(
            zip(arch.stage_blocks, model.stage_blocks), 1):
        if theirs != ours:
            fix = (f'depth={arch.depth}'
                   if arch.depth else 'the depth of the checkpoint')
            problems.append(
                f'checkpoint is {arch.name} ({theirs} blocks in stage '
                f'{stage}), model is ResNeSt-{model.depth} ({ours}): build '
                f'the model with {fix} or use ResNeSt-{model.depth} weights')
            break
    if (arch.stem_channels is not None
            and arch.stem_channels != model.stem_channels):
        problems.append(
            f'checkpoint stem is {arch.stem_channels} channels wide, model '
            f'has stem_channels={model.stem_channels}: '
            f'set stem_channels={arch.stem_channels} '
            f'(the authors use 64 for ResNeSt-50 and 128 from ResNeSt-101 on)')
    for name in ('radix', 'groups'):
        theirs, ours = getattr(arch, name), getattr(model, name)
        if theirs != ours:
            problems.append(f'checkpoint has {name}={theirs}, model '
                            f'{name}={ours}: set {name}={theirs}')
    if problems:
        raise ValueError('checkpoint does not fit the model: ' +
                         '; '.join(problems))
