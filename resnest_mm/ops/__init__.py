"""Every custom autograd function and private torch API of resnest_mm, and
the memory-saving training path built from them: layers call these ops, and
:func:`memory_saving`, entered once per backbone forward, decides whether
the path acts."""
from .functions import spatial_mean
from .path import MaxPool2d, checkpoint, memory_saving, norm_act, weighted_sum
from .torch_api import BatchNormBase, TorchContractError, sync_group

__all__ = [
    'memory_saving', 'norm_act', 'weighted_sum', 'MaxPool2d', 'checkpoint',
    'spatial_mean', 'sync_group', 'BatchNormBase', 'TorchContractError'
]
