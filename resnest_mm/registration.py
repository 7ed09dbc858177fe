"""Put our ``ResNeSt`` in mmdet's and mmseg's model registries, in place of
theirs.

Each registry's ``MODELS`` lazily imports its own ``models`` package the first
time it builds, and that import registers the upstream ``ResNeSt`` without
``force``: it raises ``KeyError`` if the name is taken. So the upstream package
is imported first (registering theirs), and ours then replaces it with
``force=True``. Whichever side is imported first, ours ends up registered and
both packages keep importing cleanly. A package that is not installed is
skipped.
"""
import importlib
from typing import List, Optional

from .backbone import ResNeSt


class MMDetResNeSt(ResNeSt):
    """``ResNeSt`` with mmdet's ResNet defaults: ``norm_eval=True``, stem width
    ``base_channels``."""

    def __init__(self,
                 *args,
                 norm_eval: bool = True,
                 stem_channels: Optional[int] = None,
                 **kwargs):
        super().__init__(
            *args, norm_eval=norm_eval, stem_channels=stem_channels, **kwargs)


class MMSegResNeSt(ResNeSt):
    """``ResNeSt`` with mmseg's ResNet defaults: ``norm_eval=False``, stem
    width 64."""

    def __init__(self,
                 *args,
                 norm_eval: bool = False,
                 stem_channels: Optional[int] = 64,
                 **kwargs):
        super().__init__(
            *args, norm_eval=norm_eval, stem_channels=stem_channels, **kwargs)


# package -> (module that registers upstream's ResNeSt, our class for that
# registry)
_TARGETS = {
    'mmdet': ('mmdet.models', MMDetResNeSt),
    'mmseg': ('mmseg.models', MMSegResNeSt),
}


def register_all() -> List[str]:
    """Register ours in every installed registry; return the scopes done, e.g.
    ``['mmdet', 'mmseg']``."""
    done = []
    for package, (models_module, cls) in _TARGETS.items():
        try:
            importlib.import_module(models_module)
        except ModuleNotFoundError as err:
            if err.name != package:  # installed but broken: say so
                raise
            continue
        registry = importlib.import_module(f'{package}.registry').MODELS
        registry.register_module(name='ResNeSt', module=cls, force=True)
        done.append(package)
    return done
