"""The custom autograd functions: ops that keep less for backward than
torch's own and rebuild the rest.

A ``conv -> BatchNorm -> ReLU`` keeps the BN input ``c`` and the ReLU output
for backward, but the output is one multiply-add and a max away from ``c``:
:func:`batch_norm_relu` keeps ``c`` and the batch statistics only, and
:class:`RecomputedActivations` hands the next op a recipe that rebuilds the
output in backward. :func:`weighted_sum_keeping_input` does the same for the
split attention's splits and sum. A training step keeps about a quarter less.

The same kernels run as in the plain ops (running statistics included; under
autocast, a float16/bfloat16 ``c`` with float32 parameters, as
``nn.BatchNorm2d`` takes them), so rebuilt values differ by rounding only. A
SyncBatchNorm across processes runs torch's own SyncBatchNorm function.
Private torch APIs are reached through :mod:`.torch_api` only.
"""
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import torch_api


class NormActState(NamedTuple):
    """What :func:`batch_norm_relu` keeps instead of its output: the input
    ``c`` ``(B, D, H, W)``, and ``(D,)`` weight, bias, batch mean and
    inverse std."""
    c: Tensor
    weight: Tensor
    bias: Tensor
    mean: Tensor
    invstd: Tensor

    def rebuild(self) -> Tensor:
        """``relu(batch_norm(c))`` in ``c``'s dtype, computed in the
        statistics' (float32 under autocast) precision."""
        scale = self.invstd * self.weight
        shift = self.bias - self.mean * scale
        out = torch.addcmul(
            shift.view(1, -1, 1, 1), self.c, scale.view(1, -1, 1, 1))
        return out.relu_().to(self.c.dtype)


class RebuiltOutput:
    """A norm-ReLU output, rebuilt once and shared by the backwards that ask
    for it in turn: the next op's (through :class:`RecomputedActivations`),
    the weighted sum's, then the ReLU's, which releases it."""

    def __init__(self):
        self._value = None

    def get(self, state: NormActState) -> Tensor:
        if self._value is None:
            self._value = state.rebuild()
        return self._value

    def release(self) -> None:
        self._value = None


def weighted_split_sum(splits: Tensor, atten: Tensor, radix: int) -> Tensor:
    """``sum_r splits[:, r] * atten[:, r]``:
    ``(B, R, C, H, W), (B, R, C, 1, 1) -> (B, C, H, W)``.

    Accumulated in place, split by split, so no ``(B, R, C, H, W)`` product
    is made. ``radix`` is given, not read from a shape, for torch.fx.
    """
    out = splits[:, 0] * atten[:, 0]
    for r in range(1, radix):
        out = out.addcmul_(splits[:, r], atten[:, r])
    return out


def batch_norm_relu(c: Tensor, norm: nn.Module,
                    group: Optional[dist.ProcessGroup]) -> Tensor:
    """``relu(norm(c))`` for a training BatchNorm2d or SyncBatchNorm,
    keeping ``c`` and the batch statistics instead of the output; ``group``
    is the SyncBatchNorm's process group, None for one process."""
    if norm.track_running_stats:
        # as nn.BatchNorm2d.forward: momentum None = cumulative
        norm.num_batches_tracked.add_(1)
        momentum = 1 / norm.num_batches_tracked.item(
        ) if norm.momentum is None else norm.momentum
    else:
        momentum = 0.0
    out, _, _ = _BatchNormReLU.apply(c, norm.weight, norm.bias,
                                     norm.running_mean, norm.running_var,
                                     momentum, norm.eps, group)
    return out


class _BatchNormReLU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, c, weight, bias, running_mean, running_var, momentum, eps,
                group):
        if group is None:
            out, mean, invstd = torch_api.batch_norm(c, weight, bias,
                                                     running_mean, running_var,
                                                     momentum, eps)
            counts = ()
        else:
            out, saved = torch_api.sync_batch_norm(c, weight, bias,
                                                   running_mean, running_var,
                                                   eps, momentum, group)
            c, weight, mean, invstd, *counts = saved
        out = out.relu_()
        ctx.save_for_backward(c, weight, bias, mean, invstd, *counts)
        ctx.eps, ctx.group, ctx.rebuilt = eps, group, RebuiltOutput()
        ctx.out_version = torch_api.version(out)
        ctx.mark_non_differentiable(mean, invstd)
        return out, mean, invstd

    @staticmethod
    def rebuild(ctx):
        """The output, from the saved input and statistics."""
        return ctx.rebuilt.get(NormActState(*ctx.saved_tensors[:5]))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_invstd):
        saved = ctx.saved_tensors  # once: checkpointing allows one unpack
        state = NormActState(*saved[:5])
        out = ctx.rebuilt.get(state)
        ctx.rebuilt.release()  # the last user of the rebuilt output
        grad = torch_api.relu_backward(grad, out)
        del out
        needs_grad = ctx.needs_input_grad[:3]
        if ctx.group is None:
            grads = torch_api.batch_norm_backward(grad, state.c, state.weight,
                                                  state.mean, state.invstd,
                                                  ctx.eps, needs_grad)
        else:
            kept = (state.c, state.weight, state.mean, state.invstd,
                    *saved[5:])
            grads = torch_api.sync_batch_norm_backward(grad, needs_grad,
                                                       ctx.group, kept)
        return (*grads, None, None, None, None, None)


def _kept_state(x: Tensor) -> Optional[_BatchNormReLU]:
    """The node of :func:`batch_norm_relu` that made ``x``, if ``x`` is its
    unchanged output (so it can be rebuilt)."""
    node = x.grad_fn
    if type(node) is _BATCH_NORM_RELU_NODE and (torch_api.version(x)
                                                == node.out_version):
        return node
    return None


def weighted_sum_keeping_input(splits: Tensor, atten: Tensor,
                               radix: int) -> Tensor:
    """:func:`weighted_split_sum` of radix-major ``splits``
    ``(B, R*C, H, W)`` and ``atten`` ``(B, R, C, 1, 1)``; where ``splits``
    comes from :func:`batch_norm_relu`, keeping its ``c`` instead of the
    splits and rebuilding both splits and sum in backward."""
    node = _kept_state(splits)
    if node is None:
        return weighted_split_sum(by_radix(splits, radix), atten, radix)
    state = NormActState(*node.saved_tensors[:5])
    return _RecomputingWeightedSum.apply(splits, atten, node.rebuilt, *state)


def by_radix(splits: Tensor, radix: int) -> Tensor:
    """``(B, R*C, H, W) -> (B, R, C, H, W)``, a view.

    ``view``, not ``unflatten``: ONNX opset 11 has no export for the latter.
    """
    return splits.view(
        splits.size(0), radix, -1, splits.size(2), splits.size(3))


class _RecomputingWeightedSum(torch.autograd.Function):

    @staticmethod
    def forward(ctx, splits, atten, rebuilt, *state):
        radix = atten.size(1)
        out = weighted_split_sum(by_radix(splits, radix), atten, radix)
        ctx.save_for_backward(atten, *state)
        ctx.rebuilt, ctx.out_version = rebuilt, torch_api.version(out)
        return out

    @staticmethod
    def rebuild(ctx):
        """The output, from the saved conv output, statistics and attention."""
        atten, *state = ctx.saved_tensors
        splits = ctx.rebuilt.get(NormActState(*state))
        return weighted_split_sum(
            by_radix(splits, atten.size(1)), atten, atten.size(1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        atten, *state = ctx.saved_tensors
        state = NormActState(*state)
        radix = atten.size(1)
        splits = by_radix(ctx.rebuilt.get(state), radix)  # (B, R, C, H, W)
        grad = grad.unsqueeze(1)  # (B, 1, C, H, W)
        grad_splits = torch.empty_like(state.c)  # c's memory format
        torch.mul(grad, atten, out=by_radix(grad_splits, radix))
        grad_atten = (splits * grad).sum((3, 4), keepdim=True)
        return (grad_splits, grad_atten, None, None, None, None, None, None)


def max_pool_keeping_input(x: Tensor, pool: nn.MaxPool2d) -> Tensor:
    """``pool(x)`` without keeping the int64 indices of the maxima (4x the
    output's bytes in bfloat16): backward finds them again in ``x``, which
    is kept anyway (as a recipe after :func:`batch_norm_relu`)."""
    return _MaxPool2d.apply(x, pool.kernel_size, pool.stride, pool.padding,
                            pool.dilation, pool.ceil_mode)


class _MaxPool2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        ctx.pool = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x)
        return torch.nn.functional.max_pool2d(x, *ctx.pool)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        grad_x = torch_api.max_pool_backward(grad, x, ctx.pool)
        return grad_x, None, None, None, None, None


def spatial_mean(x: Tensor) -> Tensor:
    """``x.mean((2, 3), keepdim=True)``: ``(B, C, H, W) -> (B, C, 1, 1)``.

    Keeps no ``x`` for backward (adaptive_avg_pool2d would). In eager
    training its gradient is a broadcast view of ``(B, C, 1, 1)``: torch's
    own is a dense NCHW tensor, which autograd then adds into the weighted
    sum's gradient of ``x``; with channels_last that add mixes layouts and
    runs ~15x slower than the add of the view.
    """
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
_REBUILDERS = {
    _BATCH_NORM_RELU_NODE:
    _BatchNormReLU.rebuild,
    torch_api.backward_node_type(_RecomputingWeightedSum):
    _RecomputingWeightedSum.rebuild
}


class RecomputedActivations(torch.autograd.graph.saved_tensors_hooks):
    """While active, an op that saves an output of :func:`batch_norm_relu`
    or :func:`weighted_sum_keeping_input` keeps a recipe instead.

    The recipe refers to the producing node, whose inputs autograd keeps
    anyway, and rebuilds the tensor (once, shared by all ops that saved it)
    when a backward asks for it. A tensor changed in place since it was made
    is stored as usual.
    """

    def __init__(self):
        super().__init__(self._pack, self._unpack)
        self._recipes = {}

    def _pack(self, tensor):
        node = tensor.grad_fn
        if type(node) not in _REBUILDERS or torch_api.version(
                tensor) != node.out_version:
            return tensor
        # one differentiable output per node
        recipe = self._recipes.get(id(node))
        if recipe is None:
            recipe = self._recipes[id(node)] = _Recipe(node)
        return recipe

    @staticmethod
    def _unpack(packed):
        return packed.tensor() if isinstance(packed, _Recipe) else packed


class _Recipe:
    """Rebuilds one saved tensor from the node that made it; keeps it until
    no backward needs it."""

    def __init__(self, node):
        self.node, self.value = node, None

    def tensor(self):
        if self.value is None:
            with torch.no_grad():
                self.value = _REBUILDERS[type(self.node)](self.node)
        return self.value
