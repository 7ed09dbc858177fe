"""The authors' released networks: their settings and one constructor each.

``resnest50()`` ... ``resnest269()`` and the "fast" ablation networks
``resnest50_fast_<R>s<K>x<W>d()`` (radix R, cardinality K, width W per
group) build our ``ResNeSt`` with that release's settings, read from the
authors' ``resnest`` 0.0.5 package (``resnest/torch/resnest.py`` and
``ablation.py``). They are plain PyTorch modules: no mmdet or mmseg needed::

    backbone = resnest50(pretrained=True, out_indices=(1, 2, 3))
    backbone.out_channels  # (512, 1024, 2048)
    backbone.out_strides  # (8, 16, 32)

``pretrained=True`` loads the release's ImageNet weights by short name
through :func:`~resnest_mm.weights.load_pretrained` (downloaded once into
the torch hub cache, hash-checked on every use; offline, the error says
which file to put where).
"""
import difflib
import inspect
import logging

from mmengine.logging import MMLogger

from .architectures import STEM_CHANNELS
from .backbone import ResNeSt


def _settings(depth, radix=2, groups=1, base_width=64, avd_first=False):
    """A release's arguments: the authors' ``stem_width`` is half our
    ``stem_channels``, their ``bottleneck_width`` our ``base_width``."""
    return dict(
        depth=depth,
        stem_channels=STEM_CHANNELS[depth],
        radix=radix,
        groups=groups,
        base_width=base_width,
        avd_first=avd_first)


# name (the authors' constructor and weights): the settings that make it.
# All have the deep stem, avg_down and avd (our defaults); the "fast" ones
# pool before the split-attention conv (avd_first).
# yapf: disable
RELEASES = {
    'resnest50': _settings(50),
    'resnest101': _settings(101),
    'resnest200': _settings(200),
    'resnest269': _settings(269),
    'resnest50_fast_1s1x64d': _settings(50, radix=1, avd_first=True),
    'resnest50_fast_2s1x64d': _settings(50, radix=2, avd_first=True),
    'resnest50_fast_4s1x64d': _settings(50, radix=4, avd_first=True),
    'resnest50_fast_1s2x40d': _settings(
        50, radix=1, groups=2, base_width=40, avd_first=True),
    'resnest50_fast_2s2x40d': _settings(
        50, radix=2, groups=2, base_width=40, avd_first=True),
    'resnest50_fast_4s2x40d': _settings(
        50, radix=4, groups=2, base_width=40, avd_first=True),
    'resnest50_fast_1s4x24d': _settings(
        50, radix=1, groups=4, base_width=24, avd_first=True),
}
# yapf: enable

# What a constructor passes on to ResNeSt (``pretrained`` is its own flag
# here, not ResNeSt's deprecated checkpoint path).
_OVERRIDABLE = tuple(
    name for name in inspect.signature(ResNeSt).parameters
    if name != 'pretrained')


def build_release(name, pretrained=False, **overrides):
    """Our ``ResNeSt`` with release ``name``'s settings, initialised.

    Args:
        name (str): A key of ``RELEASES``, e.g. ``'resnest50'``.
        pretrained (bool): Load the release's ImageNet weights (as
            ``init_cfg=dict(type='Pretrained', checkpoint=name)``); else
            the backbone's own initialisation (Kaiming, zeroed last norms).
        **overrides: Any other ``ResNeSt`` argument, e.g.
            ``out_indices=(3,), frozen_stages=1``.

    Returns the module with its weights set (``init_weights`` has run, so
    an mmengine model that holds it does not initialise it again).

    Raises ``TypeError`` for an argument ``ResNeSt`` does not take, or one
    the release fixes (depth, stem width, radix, groups, base width,
    avd_first): another network is ``ResNeSt(...)``, not this release.
    """
    if name not in RELEASES:
        raise ValueError(f'unknown release {name!r}; releases: '
                         f'{", ".join(RELEASES)}')
    if not isinstance(pretrained, bool):
        raise TypeError(
            f'{name}(pretrained=...) takes True or False, got {pretrained!r}; '
            f'for other weights pass init_cfg=dict(type="Pretrained", '
            f'checkpoint=...)')
    settings = RELEASES[name]
    unknown = [k for k in overrides if k not in _OVERRIDABLE]
    if unknown:
        hints = ''.join(
            f' ({k}: did you mean {close[0]}?)' for k in unknown
            for close in [difflib.get_close_matches(k, _OVERRIDABLE, 1)]
            if close)
        raise TypeError(
            f'{name}() got unknown arguments {", ".join(unknown)}{hints}; it '
            f'takes pretrained and these ResNeSt arguments: '
            f'{", ".join(k for k in _OVERRIDABLE if k not in settings)}')
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
    quiet = _NoParameterTable()
    logger.addFilter(quiet)
    try:
        model.init_weights()
    finally:
        logger.removeFilter(quiet)
    return model


class _NoParameterTable(logging.Filter):
    """Drop mmengine's table of how each parameter was initialised.

    Without a log file, ``init_weights`` logs it to the console, one INFO
    record per parameter (each starting with a newline): over 1000 for
    ResNeSt-50, noise in a plain PyTorch program. Other records (the load
    report of :func:`~resnest_mm.weights.load_pretrained`) pass.
    """

    def filter(self, record):
        return not (record.levelno == logging.INFO
                    and str(record.msg).startswith('\n'))


def resnest50(pretrained=False, **kwargs):
    """ResNeSt-50, stem 64 (ImageNet top-1 81.03 at 224)."""
    return build_release('resnest50', pretrained, **kwargs)


def resnest101(pretrained=False, **kwargs):
    """ResNeSt-101, stem 128 (ImageNet top-1 82.83 at 256)."""
    return build_release('resnest101', pretrained, **kwargs)


def resnest200(pretrained=False, **kwargs):
    """ResNeSt-200, stem 128 (ImageNet top-1 83.84 at 320)."""
    return build_release('resnest200', pretrained, **kwargs)


def resnest269(pretrained=False, **kwargs):
    """ResNeSt-269, stem 128 (ImageNet top-1 84.54 at 416)."""
    return build_release('resnest269', pretrained, **kwargs)


def resnest50_fast_1s1x64d(pretrained=False, **kwargs):
    """ResNeSt-50 fast: radix 1 (sigmoid gate), 1 group of 64."""
    return build_release('resnest50_fast_1s1x64d', pretrained, **kwargs)


def resnest50_fast_2s1x64d(pretrained=False, **kwargs):
    """ResNeSt-50 fast: radix 2, 1 group of 64."""
    return build_release('resnest50_fast_2s1x64d', pretrained, **kwargs)


def resnest50_fast_4s1x64d(pretrained=False, **kwargs):
    """ResNeSt-50 fast: radix 4, 1 group of 64."""
    return build_release('resnest50_fast_4s1x64d', pretrained, **kwargs)


def resnest50_fast_1s2x40d(pretrained=False, **kwargs):
    """ResNeSt-50 fast: radix 1 (sigmoid gate), 2 groups of 40."""
    return build_release('resnest50_fast_1s2x40d', pretrained, **kwargs)


def resnest50_fast_2s2x40d(pretrained=False, **kwargs):
    """ResNeSt-50 fast: radix 2, 2 groups of 40."""
    return build_release('resnest50_fast_2s2x40d', pretrained, **kwargs)


def resnest50_fast_4s2x40d(pretrained=False, **kwargs):
    """ResNeSt-50 fast: radix 4, 2 groups of 40."""
    return build_release('resnest50_fast_4s2x40d', pretrained, **kwargs)


def resnest50_fast_1s4x24d(pretrained=False, **kwargs):
    """ResNeSt-50 fast: radix 1 (sigmoid gate), 4 groups of 24."""
    return build_release('resnest50_fast_1s4x24d', pretrained, **kwargs)
