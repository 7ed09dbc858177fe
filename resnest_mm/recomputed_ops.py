"""Training ops of the split attention that recompute ``relu(bn0(conv))`` in backward instead of storing it.

In a split-attention conv the BN input ``c = conv(x)`` (``(B, R*C, H, W)``)
must be kept for BN's backward anyway. Its output after the ReLU, the splits,
is as large and is kept by autograd twice over: by the ReLU and by the
weighted sum of the splits. Both only need it elementwise, and it is one
multiply-add and a max away from ``c``, so these two ops keep ``c`` and the
batch statistics instead, and rebuild the splits in backward: a ResNeSt
training step then holds two fewer ``(B, R*C, H, W)`` tensors per block.

The forward values are those of ``relu(batch_norm(c))`` and of the weighted
sum; running statistics are updated as :class:`torch.nn.BatchNorm2d` does.
"""
import torch
from torch.autograd.function import once_differentiable


def weighted_split_sum(splits, atten, radix):
    """``sum_r splits[:, r] * atten[:, r]``: ``(B, R, C, H, W), (B, R, C, 1, 1) -> (B, C, H, W)``.

    Accumulated in place, split by split, so no ``(B, R, C, H, W)`` product is
    made. ``radix`` is given, not read from a shape, for torch.fx.
    """
    out = splits[:, 0] * atten[:, 0]
    for r in range(1, radix):
        out = out.addcmul_(splits[:, r], atten[:, r])
    return out


def supports_recompute(norm, c):
    """Whether ``norm`` is a plain, affine, training-mode BatchNorm these ops can stand in for."""
    return (type(norm) in (torch.nn.BatchNorm2d, ) and norm.training and norm.affine
            and c.dtype == norm.weight.dtype)


def batch_norm_relu(c, norm):
    """``relu(norm(c))`` for a training BatchNorm; returns it and a handle for :func:`recomputing_weighted_sum`."""
    if norm.track_running_stats:
        norm.num_batches_tracked.add_(1)  # as nn.BatchNorm2d.forward: momentum None = cumulative
        momentum = 1 / norm.num_batches_tracked.item() if norm.momentum is None else norm.momentum
    else:
        momentum = 0.0
    shared = {}  # the splits rebuilt by the sum's backward, reused by this op's backward
    x, mean, invstd = _BatchNormReLU.apply(c, norm.weight, norm.bias, norm.running_mean,
                                           norm.running_var, momentum, norm.eps, shared)
    return x, (c, norm.weight, norm.bias, mean, invstd, shared)


def recomputing_weighted_sum(x, atten, handle):
    """:func:`weighted_split_sum` of ``x`` from :func:`batch_norm_relu`, keeping its input instead of ``x``.

    ``x``: ``(B, R*C, H, W)`` radix-major, ``atten``: ``(B, R, C, 1, 1)``.
    """
    return _RecomputingWeightedSum.apply(x, atten, *handle)


def _recompute(c, weight, bias, mean, invstd):
    """``relu(batch_norm(c))`` (``(B, D, H, W)``) from the saved batch statistics."""
    scale = (invstd * weight).view(1, -1, 1, 1)
    shift = (bias - mean * invstd * weight).view(1, -1, 1, 1)
    return torch.addcmul(shift, c, scale).relu_()


class _BatchNormReLU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, c, weight, bias, running_mean, running_var, momentum, eps, shared):
        out, mean, invstd = torch.native_batch_norm(c, weight, bias, running_mean, running_var,
                                                    True, momentum, eps)
        ctx.save_for_backward(c, weight, bias, mean, invstd)
        ctx.eps, ctx.shared = eps, shared
        ctx.mark_non_differentiable(mean, invstd)
        return out.relu_(), mean, invstd

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_mean, _grad_invstd):
        c, weight, bias, mean, invstd = ctx.saved_tensors
        x = ctx.shared.pop('x', None)
        if x is None:  # the weighted sum did not need a gradient
            x = _recompute(c, weight, bias, mean, invstd)
        grad = torch.ops.aten.threshold_backward(grad, x, 0)  # the ReLU's backward
        del x
        grad_c, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, c, weight, None, None, mean, invstd, True, ctx.eps,
            list(ctx.needs_input_grad[:3]))
        return grad_c, grad_weight, grad_bias, None, None, None, None, None


class _RecomputingWeightedSum(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, atten, c, weight, bias, mean, invstd, shared):
        ctx.save_for_backward(atten, c, weight, bias, mean, invstd)
        ctx.shared = shared
        return weighted_split_sum(x.unflatten(1, atten.shape[1:3]), atten, atten.size(1))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        atten, c, weight, bias, mean, invstd = ctx.saved_tensors
        x = _recompute(c, weight, bias, mean, invstd)
        ctx.shared['x'] = x
        splits = x.unflatten(1, atten.shape[1:3])  # (B, R, C, H, W)
        grad = grad.unsqueeze(1)  # (B, 1, C, H, W)
        grad_x = torch.empty_like(c)  # c's memory format
        torch.mul(grad, atten, out=grad_x.unflatten(1, atten.shape[1:3]))
        grad_atten = (splits * grad).sum((3, 4), keepdim=True)
        return grad_x, grad_atten, None, None, None, None, None, None
