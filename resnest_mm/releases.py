"""The authors' released networks: a :class:`Release` record each in
``RELEASES``, and a plain PyTorch constructor each (``resnest50()`` ...), set
as in the authors' ``resnest`` 0.0.5 package (docs/plain_pytorch.md)."""
import difflib
import inspect
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from mmengine.logging import MMLogger

from .architectures import STEM_CHANNELS

if TYPE_CHECKING:
    from .backbone import ResNeSt


@dataclass(frozen=True)
class Release:
    """One of the authors' networks and its ImageNet weights. All have the
    deep stem, avg_down and avd (our defaults); "fast" ones pool before the
    split-attention conv (``avd_first``). ``base_width``: their
    ``bottleneck_width``."""
    name: str  # the authors' constructor, and the short name of its weights
    depth: int
    sha256: str  # the file's first 8 hex digits, the authors' _model_sha256
    radix: int = 2
    groups: int = 1
    base_width: int = 64
    avd_first: bool = False
    top1: float | None = None  # ImageNet top-1 of the weights, as published
    eval_size: int | None = None  # the crop size it was measured at

    @property
    def stem_channels(self) -> int:
        return STEM_CHANNELS[self.depth]

    @property
    def file(self) -> str:
        return f'{self.name}-{self.sha256}.pth'

    @property
    def settings(self) -> dict[str, Any]:
        """The ``ResNeSt`` arguments it fixes, in its errors' order."""
        names = ('depth', 'stem_channels', 'radix', 'groups', 'base_width',
                 'avd_first')
        return {name: getattr(self, name) for name in names}

    @property
    def description(self) -> str:
        groups = 'group' if self.groups == 1 else 'groups'
        gate = ' (sigmoid gate)' if self.radix == 1 else ''
        text = (f'ResNeSt-{self.depth}{" fast" if self.avd_first else ""}: '
                f'radix {self.radix}{gate}, {self.groups} {groups} of '
                f'{self.base_width}, stem {self.stem_channels}')
        if self.top1 is not None:
            text += f' (ImageNet top-1 {self.top1} at {self.eval_size})'
        return text


def _fast(name: str, sha256: str) -> Release:
    """A "fast" ablation network: its settings are in its name,
    ``resnest50_fast_<radix>s<groups>x<base_width>d``."""
    match = re.fullmatch(r'resnest50_fast_(\d)s(\d)x(\d+)d', name)
    radix, groups, width = map(int, match.groups())
    return Release(name, 50, sha256, radix, groups, width, avd_first=True)


RELEASES = {
    release.name: release
    for release in (
        Release('resnest50', 50, '528c19ca', top1=81.03, eval_size=224),
        Release('resnest101', 101, '22405ba7', top1=82.83, eval_size=256),
        Release('resnest200', 200, '75117900', top1=83.84, eval_size=320),
        Release('resnest269', 269, '0cc87c48', top1=84.54, eval_size=416),
        _fast('resnest50_fast_1s1x64d', 'd8fbf808'),
        _fast('resnest50_fast_2s1x64d', '44938639'),
        _fast('resnest50_fast_4s1x64d', 'f74f3fc3'),
        _fast('resnest50_fast_1s2x40d', '32830b84'),
        _fast('resnest50_fast_2s2x40d', '9d126481'),
        _fast('resnest50_fast_4s2x40d', '41d14ed0'),
        _fast('resnest50_fast_1s4x24d', 'd4a4f76f'),
    )
}


def build_release(name: str,
                  pretrained: bool = False,
                  **overrides: Any) -> 'ResNeSt':
    """Our ``ResNeSt`` with release ``name``'s settings, initialised (so a
    model holding it does not initialise it again).

    Args:
        name (str): A key of ``RELEASES``, e.g. ``'resnest50'``.
        pretrained (bool): Load the release's ImageNet weights (as
            ``init_cfg=dict(type='Pretrained', checkpoint=name)``).
        **overrides: Any other ``ResNeSt`` argument, e.g.
            ``out_indices=(3,)``; not one the release fixes (``TypeError``).
    """
    from .backbone import ResNeSt  # not at the top: it imports this module
    if name not in RELEASES:
        raise ValueError(f'unknown release {name!r}; releases: '
                         f'{", ".join(RELEASES)}')
    if not isinstance(pretrained, bool):
        raise TypeError(
            f'{name}(pretrained=...) takes True or False, got {pretrained!r}; '
            f'for other weights pass init_cfg=dict(type="Pretrained", '
            f'checkpoint=...)')
    settings = RELEASES[name].settings
    overridable = list(inspect.signature(ResNeSt).parameters)
    # ``pretrained`` is our own flag, not ResNeSt's deprecated checkpoint path
    overridable.remove('pretrained')
    unknown = [k for k in overrides if k not in overridable]
    if unknown:
        hints = ''.join(
            f' ({k}: did you mean {close}?)' for k in unknown
            for close in difflib.get_close_matches(k, overridable, 1))
        raise TypeError(
            f'{name}() got unknown arguments {", ".join(unknown)}{hints}; it '
            f'takes pretrained and these ResNeSt arguments: '
            f'{", ".join(k for k in overridable if k not in settings)}')
    fixed = [k for k in overrides if k in settings]
    if fixed:
        given = ', '.join(f'{k}={overrides[k]!r}' for k in fixed)
        release = ', '.join(f'{k}={v!r}' for k, v in settings.items())
        raise TypeError(
            f'{name}() is the release with {release}; it cannot take '
            f'{given}. Build ResNeSt({given}, ...) for another network')
    if pretrained:
        if overrides.get('init_cfg') is not None:
            raise ValueError(
                f'{name}(pretrained=True) loads its ImageNet weights; it '
                f'cannot also take init_cfg={overrides["init_cfg"]!r}')
        overrides['init_cfg'] = dict(type='Pretrained', checkpoint=name)
    model = ResNeSt(**settings, **overrides)
    logger = MMLogger.get_current_instance()
    logger.addFilter(_no_parameter_table)
    try:
        model.init_weights()
    finally:
        logger.removeFilter(_no_parameter_table)
    return model


def _no_parameter_table(record: logging.LogRecord) -> bool:
    """Drops mmengine's initialisation table (an INFO record per parameter,
    from a newline: over 1000 for ResNeSt-50); the load report passes."""
    return not (record.levelno == logging.INFO
                and str(record.msg).startswith('\n'))


def _constructor(name: str) -> Callable[..., 'ResNeSt']:
    """Release ``name``'s constructor (a module-level name, for pickling)."""

    def constructor(pretrained: bool = False, **kwargs: Any) -> 'ResNeSt':
        return build_release(name, pretrained, **kwargs)

    constructor.__name__ = constructor.__qualname__ = name
    constructor.__doc__ = (
        f'{RELEASES[name].description}.\n\nThe authors\' ``{name}``; '
        f'``pretrained`` and the other arguments as in :func:`build_release`.')
    return constructor


resnest50 = _constructor('resnest50')
resnest101 = _constructor('resnest101')
resnest200 = _constructor('resnest200')
resnest269 = _constructor('resnest269')
resnest50_fast_1s1x64d = _constructor('resnest50_fast_1s1x64d')
resnest50_fast_2s1x64d = _constructor('resnest50_fast_2s1x64d')
resnest50_fast_4s1x64d = _constructor('resnest50_fast_4s1x64d')
resnest50_fast_1s2x40d = _constructor('resnest50_fast_1s2x40d')
resnest50_fast_2s2x40d = _constructor('resnest50_fast_2s2x40d')
resnest50_fast_4s2x40d = _constructor('resnest50_fast_4s2x40d')
resnest50_fast_1s4x24d = _constructor('resnest50_fast_1s4x24d')
