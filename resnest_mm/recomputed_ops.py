"""Training ops that rebuild cheap activations in backward instead of storing
them.

Every ``conv -> BatchNorm -> ReLU`` of a ResNeSt keeps two tensors for
backward: the BN input ``c`` (BN's backward needs it) and the ReLU output
(the ReLU's backward and the next op need it). The ReLU output is one
multiply-add and a max away from ``c``, so :func:`norm_relu` keeps ``c`` and
the batch statistics only, and :class:`RecomputedActivations` hands later ops a
recipe that rebuilds the output in backward instead of the stored tensor. In
the split attention, :func:`recomputing_weighted_sum` does the same for the
splits and, with the recipe, for the attention-weighted sum: a training step
then keeps about a quarter less.

The forward values are those of ``relu(batch_norm(c))`` and of the weighted
sum; running statistics are updated as :class:`torch.nn.BatchNorm2d` does.
Rebuilt values differ from the stored ones by float rounding only.

Under ``torch.autocast`` the conv output ``c`` is float16 or bfloat16 while
the norm's parameters and statistics stay float32, as in
:class:`torch.nn.BatchNorm2d`, whose kernels take that mix: the same kernels
run here, and the output is rebuilt in float32 and rounded to ``c``'s dtype.

A :class:`torch.nn.SyncBatchNorm` that combines the batches of several
processes runs torch's own SyncBatchNorm function (kernels, collectives and
running statistics) inside :class:`_BatchNormReLU`; it keeps what torch's
function keeps, the input and the global statistics, so the output is rebuilt
from them as for a plain BatchNorm.
"""
import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable
# torch's SyncBatchNorm autograd function, run as is for the norm
from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBatchNorm

try:
    from torch.compiler import is_compiling  # torch >= 2.3
except ImportError:
    from torch._dynamo import is_compiling  # torch 2.1, 2.2


def weighted_split_sum(splits, atten, radix):
    """``sum_r splits[:, r] * atten[:, r]``:
    ``(B, R, C, H, W), (B, R, C, 1, 1) -> (B, C, H, W)``.

    Accumulated in place, split by split, so no ``(B, R, C, H, W)`` product is
    made. ``radix`` is given, not read from a shape, for torch.fx.
    """
    out = splits[:, 0] * atten[:, 0]
    for r in range(1, radix):
        out = out.addcmul_(splits[:, r], atten[:, r])
    return out


def norm_relu(c, norm, relu, dropblock=None, recompute=True):
    """``relu(dropblock(norm(c)))``; returns it and, where it kept ``c``
    instead, a handle.

    The handle (for :func:`recomputing_weighted_sum`) is None on the plain
    path: ``recompute=False``, eval mode, no gradient, norms other than
    BatchNorm2d and SyncBatchNorm, SyncBatchNorm across processes on a device
    torch's SyncBatchNorm refuses (it raises there), a DropBlock between,
    tracing, and torch.compile (whose partitioner chooses what to recompute
    itself).
    """
    if (recompute and dropblock is None and torch.is_grad_enabled()
            and not tracing(c) and _normalises_as_torch(norm) and norm.training
            and norm.affine and _batch_norm_takes(c.dtype, norm.weight.dtype)):
        group = sync_group(norm)
        if group is None or _syncs_on(c.device):
            return _batch_norm_relu(c, norm, group)
    x = norm(c)
    if dropblock is not None:
        x = dropblock(x)
    return relu(x), None


def max_pool(x, pool, recompute=True):
    """``pool(x)`` for an ``nn.MaxPool2d``; in training, without keeping
    the int64 indices of the maxima (4x the output's bytes in bfloat16).

    Its backward finds the maxima again in ``x``, which it keeps anyway
    (as a recipe, after :func:`norm_relu`); the same kernel picks the same
    maxima, so the gradient is the plain path's.
    """
    if (recompute and not tracing(x) and x.requires_grad
            and torch.is_grad_enabled() and not pool.return_indices):
        return _MaxPool2d.apply(x, pool.kernel_size, pool.stride, pool.padding,
                                pool.dilation, pool.ceil_mode)
    return pool(x)


def _batch_norm_takes(input_dtype, param_dtype):
    """Whether torch's batch norm kernels take this input and parameter dtype:
    the same, or autocast's float16/bfloat16 input with float32
    parameters."""
    return input_dtype == param_dtype or (input_dtype
                                          in (torch.float16, torch.bfloat16)
                                          and param_dtype == torch.float32)


def _normalises_as_torch(norm):
    """Whether ``norm`` runs torch's own BatchNorm2d or SyncBatchNorm forward
    (mmengine's ``SyncBN`` subclass only changes the input check)."""
    return any(
        isinstance(norm, cls) and type(norm).forward is cls.forward
        for cls in (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm))


def sync_group(norm):
    """The process group over whose batches a training SyncBatchNorm
    normalises, or None where it normalises its own batch (one process, not
    distributed, eval mode, any other norm), as ``SyncBatchNorm.forward``
    decides."""
    if not (isinstance(norm, torch.nn.SyncBatchNorm) and norm.training
            and dist.is_available() and dist.is_initialized()):
        return None
    group = norm.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _syncs_on(device):
    """Whether torch's SyncBatchNorm runs across processes on ``device``
    (the device types its ``forward`` accepts)."""
    return device.type in ('cuda', 'hpu', 'xpu',
                           torch._C._get_privateuse1_backend_name())


def tracing(x):
    """Whether ``x`` flows through torch.fx, torch.jit.trace or torch.compile
    rather than eager."""
    return (isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing()
            or is_compiling())


def _batch_norm_relu(c, norm, group):
    if norm.track_running_stats:
        # as nn.BatchNorm2d.forward: momentum None = cumulative
        norm.num_batches_tracked.add_(1)
        momentum = 1 / norm.num_batches_tracked.item(
        ) if norm.momentum is None else norm.momentum
    else:
        momentum = 0.0
    shared = {}  # see _rebuilt_output
    x, mean, invstd = _BatchNormReLU.apply(c, norm.weight, norm.bias,
                                           norm.running_mean, norm.running_var,
                                           momentum, norm.eps, shared, group)
    return x, (c, norm.weight, norm.bias, mean, invstd, shared)


def recomputing_weighted_sum(x, atten, handle):
    """:func:`weighted_split_sum` of ``x`` from :func:`norm_relu`, keeping
    ``c`` instead of ``x``.

    ``x``: ``(B, R*C, H, W)`` radix-major, ``atten``: ``(B, R, C, 1, 1)``.
    """
    return _RecomputingWeightedSum.apply(x, atten, *handle)


def _rebuilt_output(shared, saved):
    """The norm-ReLU output, rebuilt once and shared by the backwards that need
    it in turn.

    A block's backward asks for it up to three times in a row: as the saved
    input of the next op (through :class:`RecomputedActivations`), in the
    weighted sum's backward, and in the ReLU's backward, which then drops it.
    """
    if 'x' not in shared:
        shared['x'] = _recompute(*saved)
    return shared['x']


def _recompute(c, weight, bias, mean, invstd):
    """``relu(batch_norm(c))`` (``(B, D, H, W)``, ``c``'s dtype) from the
    saved batch statistics, computed in their (float32 under autocast)
    precision."""
    scale = invstd * weight
    return torch.addcmul((bias - mean * scale).view(1, -1, 1, 1), c,
                         scale.view(1, -1, 1, 1)).relu_().to(c.dtype)


class _BatchNormReLU(torch.autograd.Function):
    """``relu(batch_norm(c))`` keeping ``c`` and the batch statistics, not the
    output. With a process ``group`` the statistics are those of all its
    processes' batches: torch's SyncBatchNorm function runs the norm, and
    ``counts`` (its per-process batch sizes) is kept for its backward."""

    @staticmethod
    def forward(ctx, c, weight, bias, running_mean, running_var, momentum, eps,
                shared, group):
        if group is None:
            out, mean, invstd = torch.native_batch_norm(
                c, weight, bias, running_mean, running_var, True, momentum,
                eps)
            counts = ()
        else:
            sync = _TorchSyncContext()
            out = _TorchSyncBatchNorm.forward(sync, c, weight, bias,
                                              running_mean, running_var, eps,
                                              momentum, group,
                                              dist.get_world_size(group))
            c, weight, mean, invstd, *counts = sync.saved_tensors
        out = out.relu_()
        ctx.save_for_backward(c, weight, bias, mean, invstd, *counts)
        ctx.eps, ctx.group = eps, group
        ctx.shared, ctx.out_version = shared, out._version
        ctx.mark_non_differentiable(mean, invstd)
        return out, mean, invstd

    @staticmethod
    def rebuild(ctx):
        """The output, from the saved input and statistics."""
        return _rebuilt_output(ctx.shared, ctx.saved_tensors[:5])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_invstd):
        saved = ctx.saved_tensors  # once: checkpointing allows a single unpack
        c, weight, bias, mean, invstd, *counts = saved
        x = _rebuilt_output(ctx.shared, saved[:5])
        ctx.shared.clear()  # the last user of the rebuilt output
        # the ReLU's backward
        grad = torch.ops.aten.threshold_backward(grad, x, 0)
        del x
        if ctx.group is None:
            grads = torch.ops.aten.native_batch_norm_backward(
                grad, c, weight, None, None, mean, invstd, True, ctx.eps,
                list(ctx.needs_input_grad[:3]))
        else:
            sync = _TorchSyncContext(ctx.needs_input_grad, ctx.group,
                                     (c, weight, mean, invstd, *counts))
            grads = _TorchSyncBatchNorm.backward(sync, grad)[:3]
        return (*grads, None, None, None, None, None, None)


class _TorchSyncContext:
    """The ``ctx`` torch's SyncBatchNorm function writes in forward and reads
    in backward, kept apart from ours, which saves more."""

    def __init__(self,
                 needs_input_grad=None,
                 process_group=None,
                 saved_tensors=()):
        self.needs_input_grad = needs_input_grad
        self.process_group = process_group
        self.saved_tensors = saved_tensors

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


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
        _, indices = torch.ops.aten.max_pool2d_with_indices(x, *ctx.pool)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, *ctx.pool, indices)
        return grad_x, None, None, None, None, None


class _RecomputingWeightedSum(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, atten, c, weight, bias, mean, invstd, shared):
        out = weighted_split_sum(
            x.unflatten(1, atten.shape[1:3]), atten, atten.size(1))
        ctx.save_for_backward(atten, c, weight, bias, mean, invstd)
        ctx.shared, ctx.out_version = shared, out._version
        return out

    @staticmethod
    def rebuild(ctx):
        """The output, from the saved conv output, statistics and attention."""
        atten, *bn = ctx.saved_tensors
        splits = _rebuilt_output(ctx.shared, bn).unflatten(1, atten.shape[1:3])
        return weighted_split_sum(splits, atten, atten.size(1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        atten, c, *_ = saved = ctx.saved_tensors
        # (B, R, C, H, W)
        splits = _rebuilt_output(ctx.shared,
                                 saved[1:]).unflatten(1, atten.shape[1:3])
        grad = grad.unsqueeze(1)  # (B, 1, C, H, W)
        grad_x = torch.empty_like(c)  # c's memory format
        torch.mul(grad, atten, out=grad_x.unflatten(1, atten.shape[1:3]))
        grad_atten = (splits * grad).sum((3, 4), keepdim=True)
        return grad_x, grad_atten, None, None, None, None, None, None


_REBUILDERS = {
    _BatchNormReLU._backward_cls: _BatchNormReLU.rebuild,
    _RecomputingWeightedSum._backward_cls: _RecomputingWeightedSum.rebuild
}


class RecomputedActivations(torch.autograd.graph.saved_tensors_hooks):
    """While active, an op that saves an output of the ops above keeps a recipe
    instead.

    The recipe refers to the producing op, whose inputs autograd keeps anyway,
    and rebuilds the tensor (once, shared by all ops that saved it) when a
    backward asks for it. A tensor changed in place since it was made is
    stored as usual.
    """

    def __init__(self):
        super().__init__(self._pack, self._unpack)
        self._recipes = {}

    def _pack(self, tensor):
        node = tensor.grad_fn
        if type(node
                ) not in _REBUILDERS or tensor._version != node.out_version:
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
    """Rebuilds one saved tensor from the op that made it; keeps it until no
    backward needs it."""

    def __init__(self, node):
        self.node, self.value = node, None

    def tensor(self):
        if self.value is None:
            with torch.no_grad():
                self.value = _REBUILDERS[type(self.node)](self.node)
        return self.value
