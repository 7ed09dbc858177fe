"""The private and version-dependent torch APIs resnest_mm uses, each behind
one name, with the contracts we rely on asserted: a torch that changes them
fails with :class:`TorchContractError`, never with a silently wrong value."""
import inspect
from types import SimpleNamespace
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.modules import _functions
from torch.nn.modules.batchnorm import _BatchNorm

try:
    from torch.compiler import is_compiling  # torch >= 2.3
except ImportError:
    from torch._dynamo import is_compiling  # torch 2.1, 2.2

#: the base class of every BatchNorm (mmcv and mmdet test against it too)
BatchNormBase = _BatchNorm

_ATEN_OPS = ('native_batch_norm_backward', 'threshold_backward',
             'max_pool2d_with_indices', 'max_pool2d_with_indices_backward')
_SYNC_BN_FORWARD = ('self', 'input', 'weight', 'bias', 'running_mean',
                    'running_var', 'eps', 'momentum', 'process_group',
                    'world_size')


class TorchContractError(RuntimeError):
    """This torch no longer does what the memory-saving path relies on."""

    def __init__(self, contract: str, found: object):
        super().__init__(
            f'torch {torch.__version__} breaks a contract of resnest_mm\'s '
            f'memory-saving path: {contract}; found {found}. Set '
            'recompute_activations=False (in a config: model.backbone.'
            'recompute_activations=False) to train on the plain path, and '
            'report this message with your torch version to resnest-mm.')


def check_contracts() -> None:
    """Assert the contracts that can be checked without running."""
    missing = [op for op in _ATEN_OPS if not hasattr(torch.ops.aten, op)]
    if missing:
        raise TorchContractError('aten ops ' + ', '.join(_ATEN_OPS), missing)
    sync = _functions.SyncBatchNorm
    params = tuple(inspect.signature(sync.forward).parameters)
    if params != _SYNC_BN_FORWARD:
        raise TorchContractError(f'SyncBatchNorm.forward{_SYNC_BN_FORWARD}',
                                 params)
    if not isinstance(getattr(sync, '_backward_cls', None), type):
        raise TorchContractError('autograd.Function._backward_cls (a type)',
                                 'none')
    if not isinstance(getattr(torch.zeros(()), '_version', None), int):
        raise TorchContractError('Tensor._version (an int)', 'none')


def tracing(x: Tensor) -> bool:
    """Whether ``x`` flows through torch.fx, jit.trace or torch.compile."""
    return (isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing()
            or is_compiling())


def sync_group(norm: torch.nn.Module) -> Optional[dist.ProcessGroup]:
    """The process group a training SyncBatchNorm normalises over, or None
    where it normalises its own batch (as ``SyncBatchNorm.forward``)."""
    if not (isinstance(norm, torch.nn.SyncBatchNorm) and norm.training
            and dist.is_available() and dist.is_initialized()):
        return None
    group = norm.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def syncs_on(device: torch.device) -> bool:
    """Whether torch's SyncBatchNorm runs across processes on ``device``."""
    return device.type in ('cuda', 'hpu', 'xpu',
                           torch._C._get_privateuse1_backend_name())


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes in on ``device_type``, or None if off."""
    if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4
        return torch.get_autocast_dtype(device_type) if (
            torch.is_autocast_enabled(device_type)) else None
    if device_type == 'cpu' and torch.is_autocast_cpu_enabled():
        return torch.get_autocast_cpu_dtype()
    if device_type == 'cuda' and torch.is_autocast_enabled():
        return torch.get_autocast_gpu_dtype()
    return None


def batch_norm(c: Tensor, weight: Tensor, bias: Tensor,
               running_mean: Optional[Tensor], running_var: Optional[Tensor],
               momentum: float, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Training-mode batch norm: ``(output, batch mean, batch invstd)``."""
    out = torch.native_batch_norm(c, weight, bias, running_mean, running_var,
                                  True, momentum, eps)
    if len(out) != 3:
        raise TorchContractError('native_batch_norm returns 3 tensors',
                                 len(out))
    return out


def batch_norm_backward(grad: Tensor, c: Tensor, weight: Tensor, mean: Tensor,
                        invstd: Tensor, eps: float,
                        needs_grad: Sequence[bool]) -> Tuple[Tensor, ...]:
    """Gradients of input, weight and bias of :func:`batch_norm`."""
    return torch.ops.aten.native_batch_norm_backward(grad, c, weight, None,
                                                     None, mean, invstd, True,
                                                     eps, list(needs_grad))


def relu_backward(grad: Tensor, out: Tensor) -> Tensor:
    """The ReLU's gradient, given its output."""
    return torch.ops.aten.threshold_backward(grad, out, 0)


def max_pool_backward(grad: Tensor, x: Tensor, pool: tuple) -> Tensor:
    """``max_pool2d``'s input gradient, finding the maxima in ``x`` again."""
    _, indices = torch.ops.aten.max_pool2d_with_indices(x, *pool)
    return torch.ops.aten.max_pool2d_with_indices_backward(
        grad, x, *pool, indices)


class _SyncContext(SimpleNamespace):
    """The ``ctx`` of torch's SyncBatchNorm function, kept apart from ours."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def sync_batch_norm(
        c: Tensor, weight: Tensor, bias: Tensor,
        running_mean: Optional[Tensor], running_var: Optional[Tensor],
        eps: float, momentum: float,
        group: dist.ProcessGroup) -> Tuple[Tensor, Tuple[Tensor, ...]]:
    """torch's SyncBatchNorm function: the output and the tensors it saves
    for :func:`sync_batch_norm_backward`."""
    ctx = _SyncContext()
    out = _functions.SyncBatchNorm.forward(ctx, c, weight, bias, running_mean,
                                           running_var, eps, momentum, group,
                                           dist.get_world_size(group))
    if len(ctx.saved_tensors) != 5:
        raise TorchContractError(
            'SyncBatchNorm.forward saves 5 tensors (input, weight, mean, '
            'invstd, per-process counts)', len(ctx.saved_tensors))
    return out, ctx.saved_tensors


def sync_batch_norm_backward(grad: Tensor, needs_grad: Sequence[bool],
                             group: dist.ProcessGroup,
                             saved: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """Gradients of input, weight and bias of :func:`sync_batch_norm`."""
    ctx = _SyncContext(process_group=group, saved_tensors=saved)
    ctx.needs_input_grad = tuple(needs_grad)
    return _functions.SyncBatchNorm.backward(ctx, grad)[:3]


def backward_node_type(function: type) -> type:
    """The type of the autograd node an ``autograd.Function`` makes."""
    return function._backward_cls


def version(tensor: Tensor) -> int:
    """How often ``tensor`` was changed in place (autograd's counter)."""
    return tensor._version


def weights_only_globals() -> dict:
    """``{'module.name': object}``: the globals torch's weights-only
    unpickler admits (private, imported only when called)."""
    from torch import _weights_only_unpickler
    return _weights_only_unpickler._get_allowed_globals()
