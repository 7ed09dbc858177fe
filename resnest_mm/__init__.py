"""resnest_mm: the ResNeSt backbone for mmdetection 3.x and mmsegmentation 1.x.

Importing this package registers our ``ResNeSt`` as ``type='ResNeSt'`` in
mmdet's and mmseg's model registries (whichever are installed).
"""
from .backbone import ResNeSt
from .bottleneck import ResNeStBottleneck
from .registration import MMDetResNeSt, MMSegResNeSt, register_all
from .split_attention import SplitAttentionConv2d

__version__ = '0.1.0'
__all__ = [
    'ResNeSt', 'ResNeStBottleneck', 'SplitAttentionConv2d', 'MMDetResNeSt',
    'MMSegResNeSt', 'register_all'
]

REGISTERED_SCOPES = register_all()
