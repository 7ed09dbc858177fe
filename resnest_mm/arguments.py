"""The checks of ResNeSt's arguments, and their errors: ``ValueError``s that
are also the type upstream raises (``KeyError`` for an unknown depth,
``AssertionError`` for the rest), so code written for upstream catches them.
"""
from typing import Optional

from .architectures import STAGE_BLOCKS


class ConfigError(ValueError, AssertionError):
    """A bad argument, which upstream refuses with an ``assert``."""


class DepthError(ValueError, KeyError):
    """An unknown depth, which upstream refuses with a ``KeyError``."""

    __str__ = ValueError.__str__  # KeyError's would quote the message


def check_arguments(backbone, dcn: Optional[dict]) -> None:
    """Reject a bad ``ResNeSt`` configuration (its attributes, and ``dcn``),
    naming the valid values, all problems at once."""
    b = backbone
    if b.depth not in STAGE_BLOCKS:
        raise DepthError(f'invalid ResNeSt depth {b.depth}; valid depths: '
                         f'{sorted(STAGE_BLOCKS)}')
    num_stages = b.num_stages
    if not 1 <= num_stages <= 4:
        raise ConfigError(f'num_stages must be 1..4, got {num_stages}')
    style_error = check_style(b.style)
    valid_indices = tuple(range(num_stages))
    last_stage_blocks = STAGE_BLOCKS[b.depth][num_stages - 1]
    multi_grid = tuple(b.multi_grid or ())
    checks = (  # (the argument is bad, why)
        (b.radix < 1, f'radix must be >= 1 (1 = sigmoid gate), got {b.radix}'),
        (b.groups < 1, f'groups must be >= 1, got {b.groups}'),
        (len(b.strides) != num_stages or len(b.dilations) != num_stages,
         f'strides {tuple(b.strides)} and dilations {tuple(b.dilations)} '
         f'must each have num_stages={num_stages} entries'),
        (not b.out_indices
         or any(i not in valid_indices for i in b.out_indices),
         f'out_indices {tuple(b.out_indices)} must be a non-empty subset of '
         f'{valid_indices} (num_stages={num_stages})'),
        (style_error is not None, style_error),
        (not -1 <= b.frozen_stages <= num_stages,
         f'frozen_stages must be in -1..{num_stages}, got {b.frozen_stages}'),
        (b.deep_stem and b.stem_channels % 2,
         f'stem_channels must be even with deep_stem, got {b.stem_channels}'),
        (dcn is not None and len(b.stage_with_dcn) != num_stages,
         f'stage_with_dcn {tuple(b.stage_with_dcn)} must have '
         f'num_stages={num_stages} entries'),
        (b.multi_grid is not None and len(multi_grid) != last_stage_blocks,
         f'multi_grid {multi_grid} must give one dilation per block of the '
         f'last stage ({last_stage_blocks} blocks)'),
        (not 0 <= b.drop_path_rate < 1,
         f'drop_path_rate must be in [0, 1), got {b.drop_path_rate}'),
        (not 0 <= b.dropblock_prob < 1,
         f'dropblock_prob must be in [0, 1), got {b.dropblock_prob}'),
        (num_stages < 3 and 0 < b.dropblock_prob < 1,
         'dropblock_prob applies to stages 3 and 4, but num_stages='
         f'{num_stages}'),
    )
    errors = [why for bad, why in checks if bad]
    if errors:
        raise ConfigError('invalid ResNeSt config: ' + '; '.join(errors))


def check_style(style: str) -> Optional[str]:
    """The problem with ``style``, if any."""
    if style not in ('pytorch', 'caffe'):
        return f"style must be 'pytorch' or 'caffe', got {style!r}"
