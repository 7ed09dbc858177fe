"""Pretrained weights loaded into a model, checked first (mmengine's loader
loads what fits and only logs the rest: a silently random backbone) and
reported."""
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from mmengine.logging import print_log

from .architectures import Architecture, check_architecture, read_architecture
from .downloads import resolve_checkpoint
from .layouts import Converted, convert_checkpoint
from .safe_load import load_checkpoint_safely

if TYPE_CHECKING:
    from .backbone import ResNeSt

# Keys a checkpoint must give: a plain ResNeSt's (not DCN offsets, plugins).
_PLAIN_KEY = re.compile(
    r'(stem\.\d+|layer\d+\.\d+\.'
    r'(conv1|bn1|conv2\.(conv|bn0|fc1|bn1|fc2)|conv3|bn3|downsample\.\d+))'
    r'\.(weight|bias|running_mean|running_var)')


@dataclass
class LoadReport:
    """What :func:`load_converted` found and did, by key name."""
    source: str
    layout: str
    architecture: Architecture
    dropped: list[str]  # source keys that are not backbone weights
    missing: list[str]  # model keys not in the checkpoint: kept as they are
    unexpected: list[str]  # checkpoint keys the model lacks: not loaded

    def __str__(self) -> str:
        notes = ((self.dropped, f'left out {len(self.dropped)} keys that are '
                  'not backbone weights'),
                 (self.missing, 'not in the checkpoint, kept as initialised'),
                 (self.unexpected, 'not in the model, not loaded'))
        return '; '.join([
            f'loaded {self.source}: {self.layout} layout, '
            f'{self.architecture.name}'
        ] + [f'{what}: {key_summary(keys)}' for keys, what in notes if keys])


def load_converted(model: 'ResNeSt',
                   converted: Converted,
                   source: str = 'checkpoint') -> LoadReport:
    """Check ``converted`` against ``model``, load it, and log and return a
    :class:`LoadReport`. Raises ``ValueError``, leaving the model untouched,
    if the architecture or shapes differ or plain weights are missing."""
    state_dict = converted.state_dict
    arch = read_architecture(state_dict)
    try:
        check_architecture(arch, model)
    except ValueError as err:
        raise ValueError(f'{source}: {err}') from None
    own = model.state_dict()
    missing = [
        k for k in own
        if k not in state_dict and not k.endswith('num_batches_tracked')
    ]
    required = [k for k in missing if _PLAIN_KEY.fullmatch(k)]
    if required:
        raise ValueError(
            f'{source} ({converted.layout}) lacks {len(required)} weights of '
            f'the backbone: {key_summary(required)}. Use a checkpoint of the '
            'whole backbone.')
    mismatched = [
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(
            f'{source}: shapes in the checkpoint differ from the model '
            f'(checkpoint vs model): {key_summary(mismatched)}')
    unexpected = [k for k in state_dict if k not in own]
    model.load_state_dict({k: v
                           for k, v in state_dict.items() if k in own},
                          strict=False)
    report = LoadReport(source, converted.layout, arch, converted.dropped,
                        missing, unexpected)
    print_log(
        str(report),
        logger='current',
        level=logging.WARNING if unexpected else logging.INFO)
    return report


def load_pretrained(model: 'ResNeSt',
                    checkpoint: str | os.PathLike,
                    prefix: str | None = None,
                    map_location: str | torch.device = 'cpu') -> LoadReport:
    """Load ``checkpoint`` (a path, URL or short name, any known layout) into
    ``model``."""
    path = resolve_checkpoint(checkpoint)
    converted = convert_checkpoint(
        load_checkpoint_safely(path, map_location), prefix)
    return load_converted(model, converted, source=path)


def key_summary(keys: list[str], limit: int = 8) -> str:
    """The keys, or beyond ``limit`` their top-level modules and counts."""
    if len(keys) <= limit:
        return ', '.join(keys)
    groups = Counter(k.split('.')[0] for k in keys)
    return ', '.join(f'{group}.* ({n})' for group, n in groups.items())
