"""resnest_mm: the ResNeSt backbone for mmdetection 3.x and mmsegmentation 1.x.

Importing it registers ``type='ResNeSt'`` in mmdet's and mmseg's model
registries (whichever are installed) and ``PreciseBNHook`` in mmengine's, and
lets ``torch.load(weights_only=True)`` read mmengine's checkpoints (torch >=
2.6's resuming and testing; :mod:`resnest_mm.safe_load`).
"""
# First: it checks mmcv and mmengine, with an error that says what to install
from . import dependencies  # noqa: F401
from .backbone import ResNeSt
from .bottleneck import ResNeStBottleneck
from .downloads import resolve_checkpoint
from .layouts import convert_checkpoint
from .precise_bn import PreciseBNHook, recompute_bn_stats
from .registration import (MMDetResNeSt, MMSegResNeSt, register_all,
                           resolve_forked_scopes)
from .releases import (RELEASES, build_release, resnest50,
                       resnest50_fast_1s1x64d, resnest50_fast_1s2x40d,
                       resnest50_fast_1s4x24d, resnest50_fast_2s1x64d,
                       resnest50_fast_2s2x40d, resnest50_fast_4s1x64d,
                       resnest50_fast_4s2x40d, resnest101, resnest200,
                       resnest269)
from .safe_load import (CorruptCheckpointError, UnsafeCheckpointError,
                        allow_mmengine_checkpoints, load_checkpoint_safely)
from .split_attention import SplitAttentionConv2d
from .version import __version__, version_info
from .weights import load_pretrained

__all__ = [
    'ResNeSt', 'ResNeStBottleneck', 'SplitAttentionConv2d', 'MMDetResNeSt',
    'MMSegResNeSt', 'register_all', 'resolve_forked_scopes',
    'load_checkpoint_safely', 'allow_mmengine_checkpoints',
    'UnsafeCheckpointError', 'CorruptCheckpointError', 'convert_checkpoint',
    'load_pretrained', 'resolve_checkpoint', 'RELEASES', 'build_release',
    'resnest50', 'resnest101', 'resnest200', 'resnest269',
    'resnest50_fast_1s1x64d', 'resnest50_fast_2s1x64d',
    'resnest50_fast_4s1x64d', 'resnest50_fast_1s2x40d',
    'resnest50_fast_2s2x40d', 'resnest50_fast_4s2x40d',
    'resnest50_fast_1s4x24d', '__version__', 'version_info', 'PreciseBNHook',
    'recompute_bn_stats'
]

REGISTERED_SCOPES = register_all()
allow_mmengine_checkpoints()
