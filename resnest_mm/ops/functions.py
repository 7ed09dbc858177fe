"""The custom autograd functions: ops that keep less for backward than
torch's own and rebuild the rest with the same kernels, so rebuilt values
differ by rounding only (docs/speed_and_memory.md)."""
from typing import Callable, NamedTuple, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import torch_api


class NormActState(NamedTuple):
    """What :func:`batch_norm_relu` keeps instead of its output: ``c``
    ``(B, D, H, W)``; ``(D,)`` weight, bias, batch mean and inverse std."""
    c: Tensor
    weight: Tensor
    bias: Tensor
    mean: Tensor
    invstd: Tensor

    def rebuild(self) -> Tensor:
        """``relu(batch_norm(c))`` in ``c``'s dtype, computed in the
        statistics' (float32 under autocast)."""
        scale = self.invstd * self.weight
        shift = self.bias - self.mean * scale
        out = torch.addcmul(
            shift.view(1, -1, 1, 1), self.c, scale.view(1, -1, 1, 1))
        return out.relu_().to(self.c.dtype)


class RebuiltOutput:
    """An output of ours, rebuilt once in backward for the ops that saved
    it, and released by the backward of its maker, which runs after theirs."""

    _value: Optional[Tensor] = None

    def get(self, rebuild: Callable[[], Tensor]) -> Tensor:
        if self._value is None:
            with torch.no_grad():
                self._value = rebuild()
        return self._value

    def release(self) -> None:
        self._value = None


def by_radix(splits: Tensor, radix: int) -> Tensor:
    """``(B, R*C, H, W) -> (B, R, C, H, W)``, a view (``view``, not
    ``unflatten``: ONNX opset 11 has no export for the latter)."""
    return splits.view(
        splits.size(0), radix, -1, splits.size(2), splits.size(3))


def weighted_split_sum(splits: Tensor, atten: Tensor, radix: int) -> Tensor:
    """``sum_r splits[:, r] * atten[:, r]``: ``(B, R*C, H, W),
    (B, R, C, 1, 1) -> (B, C, H, W)``, accumulated in place (no product of
    the splits' size); ``radix`` is given, not read from a shape, for fx."""
    splits = by_radix(splits, radix)
    out = splits[:, 0] * atten[:, 0]
    for r in range(1, radix):
        out = out.addcmul_(splits[:, r], atten[:, r])
    return out


def batch_norm_relu(c: Tensor, norm: nn.Module,
                    group: Optional[dist.ProcessGroup]) -> Tensor:
    """``relu(norm(c))`` for a training BatchNorm2d or SyncBatchNorm (over
    ``group``, or None), keeping ``c`` and the statistics, not the output."""
    momentum = norm.momentum if norm.track_running_stats else 0.0
    if norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative, as in nn.BatchNorm2d.forward
            momentum = 1 / norm.num_batches_tracked.item()
    return _BatchNormReLU.apply(c, norm.weight, norm.bias, norm.running_mean,
                                norm.running_var, momentum, norm.eps, group)[0]


class _BatchNormReLU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, c, weight, bias, running_mean, running_var, momentum, eps,
                group):
        inputs = (c, weight, bias, running_mean, running_var)
        if group is None:
            out, mean, invstd = torch_api.batch_norm(*inputs, momentum, eps)
            counts = ()
        else:
            out, saved = torch_api.sync_batch_norm(*inputs, eps, momentum,
                                                   group)
            c, weight, mean, invstd, *counts = saved
        out = out.relu_()
        ctx.save_for_backward(c, weight, bias, mean, invstd, *counts)
        ctx.eps, ctx.group, ctx.rebuilt = eps, group, RebuiltOutput()
        ctx.out_version = torch_api.version(out)
        ctx.mark_non_differentiable(mean, invstd)
        return out, mean, invstd

    @staticmethod
    def rebuild(ctx):
        return NormActState(*ctx.saved_tensors[:5]).rebuild()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_invstd):
        saved = ctx.saved_tensors  # once: checkpointing allows one unpack
        c, weight, _, mean, invstd, *counts = saved
        rebuilt = ctx.rebuilt.get(NormActState(*saved[:5]).rebuild)
        grad = torch_api.relu_backward(grad, rebuilt)
        ctx.rebuilt.release()
        needs_grad = ctx.needs_input_grad[:3]
        if ctx.group is None:
            grads = torch_api.batch_norm_backward(grad, c, weight, mean,
                                                  invstd, ctx.eps, needs_grad)
        else:
            grads = torch_api.sync_batch_norm_backward(
                grad, needs_grad, ctx.group,
                (c, weight, mean, invstd, *counts))
        return (*grads, None, None, None, None, None)


def _rebuildable(x: Tensor):
    """Our node that made and can rebuild ``x`` (unchanged since), or None."""
    node = x.grad_fn
    if type(node) in _REBUILDERS and torch_api.version(x) == node.out_version:
        return node
    return None


def weighted_sum_keeping_input(splits: Tensor, atten: Tensor,
                               radix: int) -> Tensor:
    """:func:`weighted_split_sum` of ``splits`` ``(B, R*C, H, W)``; where
    they come from :func:`batch_norm_relu`, keeping its ``c`` instead and
    rebuilding splits and sum in backward."""
    node = _rebuildable(splits)
    if type(node) is not _BATCH_NORM_RELU_NODE:
        return weighted_split_sum(splits, atten, radix)
    state = NormActState(*node.saved_tensors[:5])
    return _RecomputingWeightedSum.apply(splits, atten, node.rebuilt, *state)


class _RecomputingWeightedSum(torch.autograd.Function):

    @staticmethod
    def forward(ctx, splits, atten, rebuilt_splits, *state):
        out = weighted_split_sum(splits, atten, atten.size(1))
        ctx.save_for_backward(atten, *state)
        ctx.splits, ctx.rebuilt = rebuilt_splits, RebuiltOutput()
        ctx.out_version = torch_api.version(out)
        return out

    @staticmethod
    def rebuild(ctx):
        atten, *state = ctx.saved_tensors
        splits = ctx.splits.get(NormActState(*state).rebuild)
        return weighted_split_sum(splits, atten, atten.size(1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        ctx.rebuilt.release()
        atten, *state = ctx.saved_tensors
        state = NormActState(*state)
        radix = atten.size(1)
        splits = by_radix(ctx.splits.get(state.rebuild), radix)
        grad = grad.unsqueeze(1)  # (B, 1, C, H, W)
        grad_splits = torch.empty_like(state.c)  # c's memory format
        torch.mul(grad, atten, out=by_radix(grad_splits, radix))
        grad_atten = (splits * grad).sum((3, 4), keepdim=True)
        return (grad_splits, grad_atten, None, None, None, None, None, None)


def max_pool_keeping_input(x: Tensor, pool: nn.MaxPool2d) -> Tensor:
    """``pool(x)`` without keeping the int64 indices of the maxima (4x the
    output's bytes in bfloat16): backward finds them again in ``x``, which
    is kept anyway (or rebuilt, after :func:`batch_norm_relu`)."""
    return _MaxPool2d.apply(x, (pool.kernel_size, pool.stride, pool.padding,
                                pool.dilation, pool.ceil_mode))


class _MaxPool2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, pool):
        ctx.pool = pool
        ctx.save_for_backward(x)
        return torch.nn.functional.max_pool2d(x, *ctx.pool)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return torch_api.max_pool_backward(grad, x, ctx.pool), None


def spatial_mean(x: Tensor) -> Tensor:
    """``x.mean((2, 3), keepdim=True)``: ``(B, C, H, W) -> (B, C, 1, 1)``,
    keeping no ``x``; in eager training its gradient is a broadcast view, not
    torch's dense NCHW tensor, ~15x slower to add to channels_last."""
    if (not torch_api.tracing(x) and x.requires_grad
            and torch.is_grad_enabled()):
        return _SpatialMean.apply(x)
    return x.mean((2, 3), keepdim=True)


class _SpatialMean(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, grad):
        return (grad / (ctx.shape[2] * ctx.shape[3])).expand(ctx.shape)


_BATCH_NORM_RELU_NODE = torch_api.backward_node_type(_BatchNormReLU)
#: the autograd nodes of ours that can rebuild their output, and how
_REBUILDERS = {
    torch_api.backward_node_type(function): function.rebuild
    for function in (_BatchNormReLU, _RecomputingWeightedSum)
}


class RecomputedActivations(torch.autograd.graph.saved_tensors_hooks):
    """Saved-tensor hooks: an op saving an unchanged output of ours keeps
    the node that made it (whose inputs autograd keeps anyway) and in
    backward takes the node's :class:`RebuiltOutput`."""

    def __init__(self):
        # static hooks: bound methods would make each instance a reference
        # cycle, garbage left for the cyclic GC every step
        super().__init__(self._pack, self._unpack)

    @staticmethod
    def _pack(tensor):
        node = _rebuildable(tensor)
        return tensor if node is None else node

    @staticmethod
    def _unpack(packed):
        if isinstance(packed, Tensor):
            return packed
        return packed.rebuilt.get(lambda: _REBUILDERS[type(packed)](packed))
