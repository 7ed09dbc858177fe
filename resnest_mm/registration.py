"""Put our ``ResNeSt`` in mmdet's and mmseg's model registries, in place of
theirs.

Each registry's ``MODELS`` lazily imports its own ``models`` package the first
time it builds, and that import registers the upstream ``ResNeSt`` without
``force``: it raises ``KeyError`` if the name is taken. So the upstream package
is imported first (registering theirs), and ours then replaces it with
``force=True``. Whichever side is imported first, ours ends up registered and
both packages keep importing cleanly. A package that is not installed is
skipped. Forks that ship ``mmseg`` under another distribution name get their
``mmseg::`` config bases resolved too (:func:`resolve_forked_scopes`).
"""
import importlib
import importlib.metadata
import importlib.util
from typing import List, Optional

from mmengine.config.utils import MODULE2PACKAGE

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


def resolve_forked_scopes() -> None:
    """Point mmengine's ``scope::`` config bases at the distribution that
    provides each scope's module, where mmengine's own name for it is absent.

    mmengine resolves ``mmseg::`` only through a distribution named
    ``mmsegmentation``; OneDL's fork ships the same ``mmseg`` module as
    ``onedl-mmsegmentation``, where such a base fails with "mmsegmentation is
    not installed" (mmengine's table, ``MODULE2PACKAGE``, is changed in
    place, for this process). Call it before ``Config.fromfile``; our tools
    do.
    """
    providers = importlib.metadata.packages_distributions()
    for scope, package in MODULE2PACKAGE.items():
        if not _installed(package) and providers.get(scope):
            MODULE2PACKAGE[scope] = providers[scope][0]


def _installed(dist):
    """mmengine's test: a distribution, or a module, of that name."""
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return importlib.util.find_spec(dist) is not None
