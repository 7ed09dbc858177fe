"""Check at import that mmcv and mmengine are installed at versions that work,
with a message that says what to install, as mmdet's ``__init__`` does: mmcv
is not in ``install_requires`` (docs/install.md). Importing this runs it.
"""
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
    mmengine = _import('mmengine', f'`pip install "mmengine>={MMENGINE_MIN}"`')
    from mmengine.utils import digit_version
    if digit_version(mmengine.__version__) < digit_version(MMENGINE_MIN):
        raise ImportError(
            f'resnest_mm needs mmengine>={MMENGINE_MIN}, but mmengine '
            f'{mmengine.__version__} is installed: run '
            f'`pip install -U "mmengine>={MMENGINE_MIN}"`.')
    fix = f'run {INSTALL_MMCV}, or {INSTALL_MMCV_LITE}.'
    mmcv = _import('mmcv', fix)
    if digit_version(mmcv.__version__) < digit_version(MMCV_MIN):
        raise ImportError(
            f'resnest_mm needs mmcv>={MMCV_MIN} (or mmcv-lite), but mmcv '
            f'{mmcv.__version__} is installed: {fix}')


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


def _import(name, fix):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # installed, but something it imports is missing
            raise
        raise ImportError(
            f'resnest_mm needs {name}, which is not installed: {fix}') from err


check_dependencies()
