"""Checkpoint loading that cannot run code, yet reads mmengine's checkpoints,
on every supported torch: weights-only with :data:`MMENGINE_SAFE_GLOBALS`
added (torch >= 2.6) or :class:`AllowlistUnpickler` (before); docs/weights.md,
"Is loading a checkpoint safe?"."""
import _compat_pickle
import codecs
import collections
import functools
import os
import pickle
import re
from typing import Any, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.utils import digit_version

from .downloads import OPENMMLAB_SCHEMES, resolve_checkpoint
from .ops.torch_api import weights_only_globals

try:
    from numpy._core import multiarray  # numpy >= 2
except ImportError:
    from numpy.core import multiarray  # numpy 1.x

# HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, name).
_STATISTICS = ('min', 'max', 'current', 'mean')
# The weights-only unpickler's reasons for refusing an object (no damage).
_REFUSAL = re.compile(
    r'GLOBAL (\S+)|Trying to call reduce|Can only (?:create|build)|'
    r'builtins\.getattr is allowed only')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickles an object outside the allowlist; nothing loaded."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or is not a PyTorch checkpoint."""


def _history_buffer_statistic(owner, name):
    """``builtins.getattr`` while unpickling, for HistoryBuffer's statistics
    only: the real one would reach any attribute of anything."""
    if owner is HistoryBuffer and name in _STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'builtins.getattr is allowed only as getattr(HistoryBuffer, '
        f'name) for name in {_STATISTICS}, got getattr({owner!r}, {name!r})')


def _numeric_dtype_classes():
    """numpy's dtype classes for bool and numbers (not object, str or void)."""
    codes = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']
    return sorted({type(np.dtype(c)) for c in codes}, key=lambda t: t.__name__)


# What mmengine's checkpoints hold beyond torch's own allowlist (how it was
# found: docs/weights.md). Objects or (object, name).
MMENGINE_SAFE_GLOBALS = [
    HistoryBuffer,
    (codecs.encode, '_codecs.encode'),
    collections.Counter,
    (_history_buffer_statistic, 'builtins.getattr'),
    np.ndarray,
    np.dtype,
    *_numeric_dtype_classes(),
    *[(getattr(multiarray, fn), f'{module}.multiarray.{fn}')
      for fn in ('_reconstruct', 'scalar')
      for module in ('numpy._core', 'numpy.core')],
]

#: whether torch's weights-only unpickler takes our allowlist (torch >= 2.6)
WEIGHTS_ONLY_EXTENSIBLE = digit_version(
    torch.__version__) >= digit_version('2.6.0')


def allow_mmengine_checkpoints() -> None:
    """Let every ``weights_only`` load in this process read mmengine
    checkpoints (torch >= 2.6; a no-op before)."""
    if WEIGHTS_ONLY_EXTENSIBLE:
        torch.serialization.add_safe_globals(MMENGINE_SAFE_GLOBALS)


@functools.lru_cache(maxsize=None)
def _allowed_globals():
    """``{'module.name': object}`` that :class:`AllowlistUnpickler` builds."""
    allowed = dict(weights_only_globals())
    for entry in MMENGINE_SAFE_GLOBALS:
        obj, name = entry if isinstance(entry, tuple) else (entry, None)
        allowed[name or f'{obj.__module__}.{obj.__qualname__}'] = obj
    return allowed


class AllowlistUnpickler(pickle.Unpickler):
    """Finds only the globals torch's weights-only unpickler admits on this
    torch and :data:`MMENGINE_SAFE_GLOBALS`, refusing others before they are
    built or called (``pickle`` docs, "Restricting Globals")."""

    def find_class(self, module, name):  # torch finds its storage types
        # Python 2 names, as pickle maps them (protocol 2 has __builtin__)
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name),
            (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        obj = _allowed_globals().get(f'{module}.{name}')
        if obj is None:
            # named as torch's own unpickler names it
            what = name if module == 'builtins' else f'{module}.{name}'
            raise pickle.UnpicklingError(
                f'Unsupported GLOBAL {what} (not in the allowlist)')
        return obj


class _AllowlistPickle:
    """What ``torch.load(pickle_module=...)`` uses of a pickle module."""
    Unpickler = AllowlistUnpickler

    @staticmethod
    def load(file, **kwargs):
        return AllowlistUnpickler(file, **kwargs).load()


def route_mmengine_loading() -> None:
    """Make mmengine load files, http(s) URLs and ``open-mmlab://`` names
    with :func:`load_checkpoint_safely` in this process: before torch 2.6,
    and in OneDL's mmengine when weights-only fails, it unpickles freely."""

    def load(filename, map_location):
        return load_checkpoint_safely(
            resolve_checkpoint(os.path.expanduser(filename)), map_location)

    CheckpointLoader.register_scheme(
        prefixes=('', 'http://', 'https://', *OPENMMLAB_SCHEMES),
        loader=load,
        force=True)


def load_checkpoint_safely(path: Union[str, os.PathLike],
                           map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)``, with errors that say what is
    wrong with the file; a ``.safetensors`` file is read with safetensors.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: the file pickles an object outside the
            allowlist (it names it); nothing in the file was run.
        CorruptCheckpointError: the file is truncated or not a checkpoint.
        ImportError: a ``.safetensors`` file without the safetensors package.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if path.endswith('.safetensors'):
        return _load_safetensors(path, map_location)
    if WEIGHTS_ONLY_EXTENSIBLE:
        # at each load: a torch.serialization.safe_globals context (OneDL's
        # mmengine opens one per load) removes ours from torch's on exit
        allow_mmengine_checkpoints()
        how = dict(weights_only=True)
    else:  # torch refuses a pickle_module with weights_only=True
        how = dict(weights_only=False, pickle_module=_AllowlistPickle)
    try:
        return torch.load(path, map_location=map_location, **how)
    except pickle.UnpicklingError as err:
        # the unpickler's one-line reason inside torch's long message
        found = re.search(r'WeightsUnpickler error:\s*([^\n]+)', str(err))
        damage = found[1] if found else str(err).splitlines()[0]
        refusal = _REFUSAL.search(damage)
        if refusal:
            what = (f'the pickled global {refusal[1]}'
                    if refusal[1] else f'a pickled object ({damage})')
            allowlist = (' or allowlist that global with '
                         'torch.serialization.add_safe_globals'
                         if WEIGHTS_ONLY_EXTENSIBLE else '')
            raise UnsafeCheckpointError(
                f'{path} is refused: it contains {what}, and loading it could '
                f'run code. Only tensors, containers and the objects mmengine '
                f'checkpoints hold are loaded. If you trust the file and its '
                f'source, load it once in a trusted environment with '
                f'torch.load(path, weights_only=False) and save only its '
                f'tensors{allowlist}.') from None
    except Exception as err:  # each kind of damage fails differently
        damage = f'{type(err).__name__}: {err}'
    raise _corrupt(path, 'PyTorch checkpoint', damage)


def _load_safetensors(path, map_location):
    """A ``.safetensors`` file's state dict, on ``map_location`` if a str."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError(
            f'{path} is a .safetensors file, which needs the safetensors '
            f'package: pip install safetensors') from None
    device = map_location if isinstance(map_location, str) else 'cpu'
    try:
        return load_file(path, device=device)
    except Exception as err:  # safetensors' own error types vary by version
        raise _corrupt(path, '.safetensors file',
                       f'{type(err).__name__}: {err}') from None


def _corrupt(path, kind, damage):
    return CorruptCheckpointError(
        f'{path} is not a readable {kind} ({damage}). It is probably '
        f'truncated or corrupt, e.g. by an interrupted download or copy: '
        f'fetch or copy it again. Nothing in it was run.')
