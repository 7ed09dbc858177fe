"""Put our ``ResNeSt`` in mmdet's and mmseg's model registries, in place of
theirs in either import order (docs/design.md), and resolve forks'
``mmseg::`` config bases."""
import importlib
import importlib.metadata
from typing import List, Optional

from mmengine.config.utils import MODULE2PACKAGE

from .backbone import ResNeSt


class MMDetResNeSt(ResNeSt):
    """``ResNeSt`` with mmdet's ResNet defaults: ``norm_eval=True``, stem width
    ``base_channels`` (as ours)."""

    def __init__(self, *args, norm_eval: bool = True, **kwargs):
        super().__init__(*args, norm_eval=norm_eval, **kwargs)


class MMSegResNeSt(ResNeSt):
    """``ResNeSt`` with mmseg's ResNet defaults: ``norm_eval=False`` (as
    ours), stem width 64."""

    def __init__(self, *args, stem_channels: Optional[int] = 64, **kwargs):
        super().__init__(*args, stem_channels=stem_channels, **kwargs)


# package -> our class for its registry
_TARGETS = {'mmdet': MMDetResNeSt, 'mmseg': MMSegResNeSt}


def register_all() -> List[str]:
    """Register ours in every installed registry; return the scopes done, e.g.
    ``['mmdet', 'mmseg']``."""
    done = []
    for package, cls in _TARGETS.items():
        try:  # registers upstream's ResNeSt (without force) first
            importlib.import_module(f'{package}.models')
        except ModuleNotFoundError as err:
            if err.name != package:  # installed but broken: say so
                raise
            continue
        registry = importlib.import_module(f'{package}.registry').MODELS
        registry.register_module(name='ResNeSt', module=cls, force=True)
        done.append(package)
    return done


def resolve_forked_scopes() -> None:
    """Point mmengine's ``scope::`` config bases (``MODULE2PACKAGE``, in
    place) at the distribution that provides each scope's module where
    mmengine's name for it does not, e.g. ``onedl-mmsegmentation`` for
    ``mmseg``. Call it before ``Config.fromfile``; our tools do."""
    providers = importlib.metadata.packages_distributions()
    for scope, package in MODULE2PACKAGE.items():
        if providers.get(scope) and package not in providers[scope]:
            MODULE2PACKAGE[scope] = providers[scope][0]
