"""Checkpoint loading that cannot run code, and that still reads mmengine's
checkpoints, on every supported torch.

``torch.load(weights_only=True)`` rebuilds only tensors, containers and
allowlisted globals, so a file cannot run code while it loads. Since torch
2.6 that is the default, and mmengine's own checkpoints stopped loading
(``UnpicklingError ... HistoryBuffer``): their ``message_hub`` holds
``HistoryBuffer`` objects of numpy arrays and scalars.
:func:`allow_mmengine_checkpoints` (run when ``resnest_mm`` is imported)
allowlists exactly those objects, so mmengine's ``--resume`` and test-time
loading work again, still with ``weights_only=True``; nothing else is admitted.

Before torch 2.6 torch's weights-only unpickler cannot be extended that way
(``add_safe_globals`` arrived in 2.4, its ``(obj, name)`` pairs in 2.6), so
:func:`load_checkpoint_safely` passes torch an allowlisting unpickler instead
(:class:`AllowlistUnpickler`): it builds exactly what torch's weights-only
unpickler admits plus the same mmengine objects, and refuses any other global
before anything runs. :func:`route_mmengine_loading` sends mmengine's own
local-file loads (``load_from``, ``--resume``, testing) through it.
``.safetensors`` files (the format of timm's and other hubs' weights) hold
only tensors by design and are read with the ``safetensors`` package.
"""
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
# The weights-only unpickler's reasons for refusing an object (not a damaged
# stream).
_REFUSAL = re.compile(
    r'GLOBAL (\S+)|Trying to call reduce|Can only (?:create|build)|'
    r'builtins\.getattr is allowed only')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the allowlist; it was not
    loaded."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or is not a PyTorch checkpoint."""


def _history_buffer_statistic(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling: admits only
    HistoryBuffer's methods.

    The real ``getattr`` would let a file reach any attribute of anything
    the unpickler can build; mmengine checkpoints only need these four.
    """
    if owner is HistoryBuffer and name in _STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'builtins.getattr is allowed only as getattr(HistoryBuffer, '
        f'name) for name in {_STATISTICS}, got getattr({owner!r}, {name!r})')


def _numeric_dtype_classes():
    """numpy's dtype classes for bool and numbers (not object, str or void)."""
    codes = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']
    return sorted({type(np.dtype(c)) for c in codes}, key=lambda t: t.__name__)


# What `torch.serialization.get_unsafe_globals_in_checkpoint` finds in a
# checkpoint written by mmengine 0.10.7's Runner (numpy 2; numpy 1 names the
# module numpy.core), besides what torch 2.13 admits by default; and two that
# torch 2.13 admits by default but the 2.1 of the frozen stack does not.
MMENGINE_SAFE_GLOBALS = [
    HistoryBuffer,
    (codecs.encode, '_codecs.encode'),  # numpy 1.x pickles array bytes so
    collections.Counter,  # the milestones of MultiStepLR's state
    (_history_buffer_statistic, 'builtins.getattr'),
    np.ndarray,  # the history arrays
    np.dtype,
    *_numeric_dtype_classes(
    ),  # the class of each dtype instance, which the unpickler builds
    *[
        (getattr(multiarray, fn), f'{module}.multiarray.{fn}')
        for fn in ('_reconstruct',
                   'scalar')  # arrays; scalars such as np.float64
        for module in ('numpy._core', 'numpy.core')
    ],
]

#: whether torch's weights-only unpickler takes our allowlist (torch >= 2.6)
WEIGHTS_ONLY_EXTENSIBLE = digit_version(
    torch.__version__) >= digit_version('2.6.0')


def allow_mmengine_checkpoints() -> None:
    """Let every ``weights_only`` load in this process read mmengine
    checkpoints (torch >= 2.6; before, torch's own loads are not weights-only
    by default, and there is nothing to extend)."""
    if WEIGHTS_ONLY_EXTENSIBLE:
        torch.serialization.add_safe_globals(MMENGINE_SAFE_GLOBALS)


def _named(entry):
    """``(name, object)`` of an ``add_safe_globals`` entry: an object, or
    ``(object, name)``."""
    if isinstance(entry, tuple):
        return entry[1], entry[0]
    return f'{entry.__module__}.{entry.__qualname__}', entry


@functools.lru_cache(maxsize=None)
def _allowed_globals():
    """``{'module.name': object}`` that :class:`AllowlistUnpickler` builds.

    Read only where the allowlisting unpickler is used (torch < 2.6), not at
    import.
    """
    return {
        **weights_only_globals(),
        **dict(map(_named, MMENGINE_SAFE_GLOBALS))
    }


class AllowlistUnpickler(pickle.Unpickler):
    """A pickle unpickler that finds only allowlisted globals: what torch's
    weights-only unpickler admits on this torch, and
    :data:`MMENGINE_SAFE_GLOBALS`.

    Every global of a pickle, whichever opcode names it, is looked up through
    :meth:`find_class`, so an object outside the list is refused before it is
    built or called (the standard way to restrict unpickling; see the
    ``pickle`` docs, "Restricting Globals"). torch resolves its storage
    types itself.
    """

    def find_class(self, module, name):
        # Python 2 names, as pickle's own find_class maps them (torch writes
        # protocol 2: builtins are pickled as __builtin__)
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


def _torch_load(path, map_location):
    if WEIGHTS_ONLY_EXTENSIBLE:
        # again at each load: a torch.serialization.safe_globals context
        # removes its globals from torch's set on exit, ours among them where
        # they overlap (OneDL's mmengine wraps each of its loads in one)
        allow_mmengine_checkpoints()
        return torch.load(path, map_location=map_location, weights_only=True)
    return torch.load(
        path,
        map_location=map_location,
        weights_only=False,  # torch refuses a pickle_module with it
        pickle_module=_AllowlistPickle)


def route_mmengine_loading() -> None:
    """Make mmengine read checkpoints with :func:`load_checkpoint_safely`
    (``load_from``, ``resume``, testing): local files, http(s) URLs and
    ``open-mmlab://`` names, fetched as mmengine fetches them.

    Before torch 2.6 mmengine's own load unpickles freely, and OneDL's
    mmengine falls back to that when the weights-only load refuses a file:
    this is what keeps code in a file from running. Our tools call it; the
    change lasts for the process.
    """

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
    try:
        return _torch_load(path, map_location)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        refusal = _REFUSAL.search(reason)
        if refusal:
            what = (f'the pickled global {refusal.group(1)}'
                    if refusal.group(1) else f'a pickled object ({reason})')
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
        # a stream the unpickler cannot parse, e.g. an unknown opcode
        damage = reason
    except Exception as err:
        # each kind of damage fails differently inside torch.load
        damage = f'{type(err).__name__}: {err}'
    raise _corrupt(path, 'PyTorch checkpoint', damage)


def _load_safetensors(path, map_location):
    """A ``.safetensors`` file's tensors as a state dict (on the CPU unless
    ``map_location`` names a device)."""
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


def _unpickler_reason(err):
    """The weights-only unpickler's own one-line reason inside torch's long
    message."""
    match = re.search(r'WeightsUnpickler error:\s*([^\n]+)', str(err))
    return match.group(1) if match else str(err).splitlines()[0]
