"""Check at import that mmcv and mmengine are installed at versions that work,
saying what to install, as mmdet's ``__init__`` does: mmcv is not in
``install_requires`` (docs/install.md)."""
import importlib

# 2.0.0: mmcv's layer builders on mmengine's registries (1.x has its own).
MMCV_MIN = '2.0.0'
# 0.7.0: mmengine's first release that supports PyTorch 2.
MMENGINE_MIN = '0.7.0'

INSTALL_MMCV = ('`pip install -U openmim && mim install "mmcv>=2.0.0,<2.2.0"` '
                '(full mmcv, with the compiled ops that mmdet, mmseg and DCN '
                'need; < 2.2.0 for mmdet 3.x and mmseg 1.x)')
INSTALL_MMCV_LITE = ('`pip install "mmcv-lite>=2.0.0"` (no compiled ops; '
                     'enough for the backbone alone)')


def check_dependencies() -> None:
    """Raise ImportError saying what to install unless mmengine, mmcv fit."""
    _require('mmengine', MMENGINE_MIN,
             f'run `pip install -U "mmengine>={MMENGINE_MIN}"`.')
    _require('mmcv', MMCV_MIN, f'run {INSTALL_MMCV}, or {INSTALL_MMCV_LITE}.',
             ' (or mmcv-lite)')


def require_mmcv_ops(what: str) -> None:
    """Import ``mmcv.ops`` (it registers DCN, DCNv2) or say to get full mmcv:
    mmcv-lite's lacks ``mmcv._ext``, and DCN would fail later with a registry
    ``KeyError``."""
    try:
        importlib.import_module('mmcv.ops')
    except ImportError as err:
        import mmcv
        raise ImportError(
            f"{what} needs mmcv's compiled ops, which the installed mmcv "
            f'{mmcv.__version__} lacks ({err}; mmcv-lite has none). Install '
            f'full mmcv instead: `pip uninstall mmcv-lite`, then '
            f'{INSTALL_MMCV}.') from err


def _require(name, minimum, fix, alternative=''):
    """Import ``name`` (>= ``minimum``), or say how to get it (``fix``)."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # installed, but something it imports is missing
            raise
        raise ImportError(f'resnest_mm needs {name}, which is not installed: '
                          f'{fix}') from err
    from mmengine.utils import digit_version  # mmengine is checked first
    if digit_version(module.__version__) < digit_version(minimum):
        raise ImportError(
            f'resnest_mm needs {name}>={minimum}{alternative}, but {name} '
            f'{module.__version__} is installed: {fix}')


check_dependencies()
