"""The memory-saving path checks itself where it has not been seen.

The path runs torch kernels outside their modules and rebuilds tensors in
backward; a device or dtype whose kernels behave otherwise (a new backend, a
torch release) could make it compute something else. So the first time it
would act on a (device type, dtype) pair in a process, it runs a small
conv-output-sized input through itself and through the plain ops and
compares outputs, gradients and running statistics. If they differ, or the
path raises, it stays off for that pair, with one warning.
"""
import warnings
from contextlib import nullcontext
from typing import Dict, List

import torch
from torch import Tensor, nn

from .functions import (RecomputedActivations, batch_norm_relu,
                        max_pool_keeping_input, weighted_split_sum,
                        weighted_sum_keeping_input)
from .torch_api import TorchContractError, autocast_dtype

#: largest relative error (2-norm) between the path and the plain ops: the
#: rebuilt values differ from the stored ones by rounding only
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2
}
_RADIX, _CHANNELS = 2, 8


def agrees_with_plain_path(device: torch.device, dtype: torch.dtype) -> bool:
    """Run the check on ``device`` in ``dtype``; warn and return False where
    the path differs or raises."""
    try:
        differences = compare_with_plain_path(device, dtype)
    except TorchContractError:
        raise
    except Exception as err:  # any failure turns the path off, as a mismatch
        differences = [f'the path raised {type(err).__name__}: {err}']
    if not differences:
        return True
    warnings.warn(
        f'resnest_mm: the memory-saving training path disagrees with the '
        f'plain path on {device.type} {dtype}: {"; ".join(differences)}. '
        f'It is now off for {device.type} {dtype} in this process: training '
        'goes on with the plain ops (the same results, more memory). Please '
        f'report this message with your torch version ({torch.__version__}) '
        'and device to resnest-mm.')
    return False


def compare_with_plain_path(device: torch.device,
                            dtype: torch.dtype) -> List[str]:
    """What differs between the path and the plain ops, beyond
    :data:`TOLERANCE`, on one small batch: a norm-ReLU, the weighted sum and
    the max pool of its output, and an op that saves that output."""
    inputs = _inputs(device, dtype)
    # saved-tensor hooks of the caller's (e.g. a checkpoint around the
    # backbone) must not see the check's own graphs: the innermost pair acts
    with torch.autograd.graph.saved_tensors_hooks(_same, _same):
        path, plain = _run(inputs, path=True), _run(inputs, path=False)
    tolerance = TOLERANCE.get(dtype, 1e-2)
    differences = []
    for what, expected in plain.items():
        err = _rel_err(path[what], expected)
        if not err <= tolerance:  # also catches nan
            differences.append(f'{what}: relative error {err:.2g} > '
                               f'{tolerance:g}')
    return differences


def _inputs(device, dtype) -> Dict[str, Tensor]:
    """Fixed random inputs; a generator of their own leaves the global RNG
    (dropout, data order) as the run would have it."""
    gen = torch.Generator().manual_seed(0)
    params = torch.float32 if dtype in (torch.float16,
                                        torch.bfloat16) else dtype
    channels = _RADIX * _CHANNELS
    shapes = {
        'c': ((4, channels, 6, 6), dtype),
        'atten': ((4, _RADIX, _CHANNELS, 1, 1), dtype),
        'scale': ((1, channels, 1, 1), dtype),
        'weight': ((channels, ), params),
        'bias': ((channels, ), params),
        'grad sum': ((4, _CHANNELS, 6, 6), torch.float32),
        'grad pool': ((4, channels, 3, 3), torch.float32),
        'grad product': ((4, channels, 6, 6), torch.float32),
    }
    return {
        name: torch.randn(shape, generator=gen).to(device, kind)
        for name, (shape, kind) in shapes.items()
    }


def _run(inputs: Dict[str, Tensor], path: bool) -> Dict[str, Tensor]:
    c, atten, scale = (
        inputs[k].clone().requires_grad_() for k in ('c', 'atten', 'scale'))
    norm = nn.BatchNorm2d(c.size(1)).to(c.device, inputs['weight'].dtype)
    with torch.no_grad():
        norm.weight.copy_(inputs['weight'])
        norm.bias.copy_(inputs['bias'])
    pool = nn.MaxPool2d(3, 2, 1)
    # autocast off, as the check sets each dtype itself (only where it is on:
    # a device type without autocast refuses torch.autocast altogether)
    no_autocast = torch.autocast(
        c.device.type, enabled=False) if autocast_dtype(
            c.device.type) else nullcontext()
    with no_autocast, torch.enable_grad():
        if path:
            with RecomputedActivations():
                x = batch_norm_relu(c, norm, None)
                outs = (weighted_sum_keeping_input(x, atten, _RADIX),
                        max_pool_keeping_input(x, pool), x * scale)
        else:
            x = torch.relu(norm(c))
            splits = x.view(c.size(0), _RADIX, _CHANNELS, 6, 6)
            outs = (weighted_split_sum(splits, atten,
                                       _RADIX), pool(x), x * scale)
        loss = sum((out.float() * inputs[f'grad {name}']).sum()
                   for out, name in zip(outs, ('sum', 'pool', 'product')))
        wrt = (c, atten, scale, norm.weight, norm.bias)
        grads = torch.autograd.grad(loss, wrt)
    result = dict(zip(('sum', 'pool', 'product'), outs))
    result.update(
        zip(('gradient of the norm input', 'gradient of the attention',
             'gradient of the next op', 'gradient of the norm weight',
             'gradient of the norm bias'), grads))
    result['running mean'] = norm.running_mean
    result['running var'] = norm.running_var
    return {k: v.detach().double() for k, v in result.items()}


def _same(tensor: Tensor) -> Tensor:
    return tensor


def _rel_err(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))
