"""The memory-saving path checks itself the first time it would act on a
(device type, dtype) pair in a process: a new backend or torch release whose
kernels behave otherwise turns it off there, with one warning."""
import warnings
from contextlib import nullcontext
from typing import Dict, List

import torch
from torch import Tensor, nn

from .functions import (RecomputedActivations, batch_norm_relu,
                        max_pool_keeping_input, weighted_split_sum,
                        weighted_sum_keeping_input)
from .torch_api import TorchContractError, autocast_dtype

#: largest relative error (2-norm) from rounding; any other dtype allows 1e-2
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
_RADIX, _CHANNELS = 2, 8
_GRADIENTS = ('norm input', 'attention', 'next op', 'norm weight', 'norm bias')


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
    # the innermost hooks act: the caller's (a checkpoint) must not see ours
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        path = _run(device, dtype, path=True)
        plain = _run(device, dtype, path=False)
    tolerance = TOLERANCE.get(dtype, 1e-2)
    differences = []
    for what, expected in plain.items():
        err = float(
            (path[what] - expected).norm() / expected.norm().clamp_min(1e-30))
        if not err <= tolerance:  # also catches nan
            differences.append(f'{what}: relative error {err:.2g} > '
                               f'{tolerance:g}')
    return differences


def _run(device: torch.device, dtype: torch.dtype,
         path: bool) -> Dict[str, Tensor]:
    """One step on the path or the plain ops, from fixed random inputs: the
    outputs, gradients and running statistics, in float64."""
    # a generator of its own leaves the global RNG as the run would have it
    gen = torch.Generator().manual_seed(0)

    def randn(*shape, dtype=dtype):
        return torch.randn(shape, generator=gen).to(device, dtype)

    channels = _RADIX * _CHANNELS
    c = randn(4, channels, 6, 6).requires_grad_()
    atten = randn(4, _RADIX, _CHANNELS, 1, 1).requires_grad_()
    scale = randn(1, channels, 1, 1).requires_grad_()
    # float32 parameters with a float16/bfloat16 input, as under autocast
    half = dtype in (torch.float16, torch.bfloat16)
    params = torch.float32 if half else dtype
    norm = nn.BatchNorm2d(channels).to(device, params)
    with torch.no_grad():
        norm.weight.copy_(randn(channels, dtype=params))
        norm.bias.copy_(randn(channels, dtype=params))
    pool = nn.MaxPool2d(3, 2, 1)
    # autocast off where on: a device type without it refuses torch.autocast
    no_autocast = nullcontext()
    if autocast_dtype(device.type):
        no_autocast = torch.autocast(device.type, enabled=False)
    with no_autocast, torch.enable_grad():
        if path:
            with RecomputedActivations():
                x = batch_norm_relu(c, norm, None)
                outs = (weighted_sum_keeping_input(x, atten, _RADIX),
                        max_pool_keeping_input(x, pool), x * scale)
        else:
            x = torch.relu(norm(c))
            weighted = weighted_split_sum(x, atten, _RADIX)
            outs = (weighted, pool(x), x * scale)
        loss = sum(
            (out.float() * randn(*out.shape, dtype=torch.float32)).sum()
            for out in outs)
        grads = torch.autograd.grad(loss,
                                    (c, atten, scale, norm.weight, norm.bias))
    names = ('sum', 'pool', 'product', *(f'gradient of the {what}'
                                         for what in _GRADIENTS),
             'running mean', 'running var')
    values = (*outs, *grads, norm.running_mean, norm.running_var)
    return {k: v.detach().double() for k, v in zip(names, values)}
