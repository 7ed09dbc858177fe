"""The memory-saving training path: whether it acts, decided once per
forward by :func:`memory_saving`, and the ops layers call, which take the
path (:mod:`.functions`) where it acts and fits, the plain ops elsewhere."""
import threading
from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Dict, Optional, Tuple

import torch
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from . import torch_api
from .functions import (RecomputedActivations, batch_norm_relu,
                        max_pool_keeping_input, weighted_split_sum,
                        weighted_sum_keeping_input)
from .self_check import agrees_with_plain_path

_local = threading.local()  # DataParallel runs replicas' forwards in threads
#: (device type, dtype) -> whether the path passed its self-check there
_verdicts: Dict[Tuple[str, torch.dtype], bool] = {}


@contextmanager
def _session(on: bool):
    """Inside, the path acts in this thread where ``on``."""
    outer, _local.on = getattr(_local, 'on', False), on
    try:
        with RecomputedActivations() if on else nullcontext():
            yield
    finally:
        _local.on = outer


def _active() -> bool:
    """Whether a forward on the path is running in this thread."""
    return not torch_api.is_compiling() and getattr(_local, 'on', False)


def memory_saving(x: Tensor, enabled: bool = True) -> ContextManager:
    """The context of one forward of ``x``: on the path where ``enabled``,
    gradients are on, it is eager (not traced or compiled), and the
    self-check passed on ``x``'s device type and (autocast) dtype."""
    if (not enabled or not torch.is_grad_enabled() or torch_api.tracing(x)
            or _active()):
        return nullcontext()
    dtype = torch_api.autocast_dtype(x.device.type) or x.dtype
    key = (x.device.type, dtype)
    if key not in _verdicts:
        torch_api.check_contracts()
        _verdicts[key] = agrees_with_plain_path(x.device, dtype)
    return _session(True) if _verdicts[key] else nullcontext()


def norm_act(c: Tensor,
             norm: nn.Module,
             act: nn.Module,
             drop: Optional[nn.Module] = None) -> Tensor:
    """``act(drop(norm(c)))``, ``(B, D, H, W)``. On the path (a ReLU after a
    training BatchNorm, no ``drop``), ``c`` and the batch statistics are kept
    instead of the output."""
    if drop is None and _active() and _fits(c, norm, act):
        group = torch_api.sync_group(norm)
        if group is None or torch_api.syncs_on(c.device):
            return batch_norm_relu(c, norm, group)
    x = norm(c)
    if drop is not None:
        x = drop(x)
    return act(x)


def weighted_sum(splits: Tensor, atten: Tensor, radix: int) -> Tensor:
    """The attention-weighted sum of radix-major splits:
    ``(B, R*C, H, W), (B, R, C, 1, 1) -> (B, C, H, W)``. On the path, the
    splits are rebuilt in backward from the conv output their norm kept."""
    if _active():
        return weighted_sum_keeping_input(splits, atten, radix)
    return weighted_split_sum(splits, atten, radix)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps no indices of the maxima on the path."""

    def forward(self, x: Tensor) -> Tensor:
        if (_active() and x.requires_grad and torch.is_grad_enabled()
                and not self.return_indices):
            return max_pool_keeping_input(x, self)
        return super().forward(x)


def checkpoint(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Non-reentrant ``torch.utils.checkpoint`` of ``fn(x)``, off the path:
    its rerun in backward, outside the session, must save the same tensors."""
    return cp.checkpoint(_off_the_path, fn, x, use_reentrant=False)


def _off_the_path(fn, x):
    with _session(False):
        return fn(x)


def _fits(c: Tensor, norm: nn.Module, act: nn.Module) -> bool:
    """Whether the path computes ``act(norm(c))``: a ReLU after an affine
    training BatchNorm2d or SyncBatchNorm with torch's ``forward`` (as
    mmengine's ``SyncBN``), gradients on, ``c`` in the parameters' dtype or
    a half dtype over float32 ones."""
    if not (type(act) is nn.ReLU and torch.is_grad_enabled() and norm.training
            and getattr(norm, 'affine', False) and any(
                isinstance(norm, cls) and type(norm).forward is cls.forward
                for cls in (nn.BatchNorm2d, nn.SyncBatchNorm))):
        return False
    return c.dtype == norm.weight.dtype or (
        c.dtype in (torch.float16, torch.bfloat16)
        and norm.weight.dtype == torch.float32)
