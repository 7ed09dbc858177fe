"""The memory-saving path under SyncBatchNorm: across 2 processes it
normalises over both batches, as one process with the whole batch does, and
keeps what it keeps with BatchNorm.

torch's SyncBatchNorm kernels (``batch_norm_stats``, ``..._gather_stats_with
_counts``, ``..._elemt``, ``..._backward_reduce``, ``..._backward_elemt``)
exist for CUDA and XPU only, and ``nn.SyncBatchNorm`` refuses other devices.
Without a GPU the ranks below therefore register CPU kernels for those five
ops (per the CUDA kernels' definitions) and let CPU pass torch's device check;
everything else, torch's SyncBatchNorm function and its gloo collectives
included, is torch's. The reference needs none of it: BatchNorm over the
whole batch in one process. It also checks the CPU kernels, as upstream's
SyncBN (torch's module on those kernels) must match it too.
"""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream

from resnest_mm import ResNeSt
from resnest_tools.runner_setup import finish_distributed
from helpers import (TWO_STAGES, images, randomize_, rel_err,
                     saved_activation_bytes)

WORLD_SIZE = 2
_CPU_KERNELS = []  # keeps the registration alive in the rank


def _per_channel(t):
    return t.view(1, -1, 1, 1)


def _register_cpu_kernels():
    lib = torch.library.Library('aten', 'IMPL')
    _CPU_KERNELS.append(lib)

    def stats(x, eps):
        var, mean = torch.var_mean(x, (0, 2, 3), correction=0)
        return mean, (var + eps).rsqrt()

    def gather_stats_with_counts(x, mean, invstd, running_mean, running_var,
                                 momentum, eps, counts):
        n = counts.sum()
        share = (counts / n).view(-1, 1)
        global_mean = (share * mean).sum(0)
        var = (share * (invstd.pow(-2) - eps +
                        (mean - global_mean).square())).sum(0)
        if running_mean is not None:
            running_mean.lerp_(global_mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * n / (n - 1)).to(running_var.dtype),
                              momentum)
        return global_mean, (var + eps).rsqrt()

    def elemt(x, weight, bias, mean, invstd, eps):
        return ((x - _per_channel(mean)) * _per_channel(invstd * weight) +
                _per_channel(bias)).to(x.dtype)

    def backward_reduce(grad, x, mean, invstd, weight, input_g, weight_g,
                        bias_g):
        sum_dy = grad.sum((0, 2, 3))
        sum_dy_xmu = (grad * (x - _per_channel(mean))).sum((0, 2, 3))
        return sum_dy, sum_dy_xmu, sum_dy_xmu * invstd, sum_dy

    def backward_elemt(grad, x, mean, invstd, weight, sum_dy, sum_dy_xmu,
                       counts):
        n = counts.sum()
        xhat_grad = _per_channel(invstd.square() * sum_dy_xmu / n)
        return ((grad - _per_channel(sum_dy / n) -
                 (x - _per_channel(mean)) * xhat_grad) *
                _per_channel(invstd * weight)).to(grad.dtype)

    for name, kernel in [
        ('batch_norm_stats', stats),
        ('batch_norm_gather_stats_with_counts', gather_stats_with_counts),
        ('batch_norm_elemt', elemt),
        ('batch_norm_backward_reduce', backward_reduce),
        ('batch_norm_backward_elemt', backward_elemt)
    ]:
        lib.impl(name, kernel, 'CPU')
    # nn.SyncBatchNorm accepts the device types cuda, hpu, xpu and this one
    torch._C._get_privateuse1_backend_name = lambda: 'cpu'


def _models(norm):
    """Upstream and ours with the same random weights and statistics."""
    kwargs = dict(
        depth=50,
        norm_eval=False,
        norm_cfg=dict(type=norm, requires_grad=True),
        **TWO_STAGES)
    ref = randomize_(MMDetUpstream(**kwargs)).double()
    ours = ResNeSt(**kwargs).double()
    ours.load_state_dict(ref.state_dict())
    ref.train()  # upstream's train() returns None
    return ref, ours.train()


def _step(model, x):
    """Outputs, the gradients of their sum and the running statistics."""
    out = model(x)
    sum(o.sum() for o in out).backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    stats = {
        k: v
        for k, v in model.state_dict().items()
        if 'running' in k or 'num_batches' in k
    }
    return out, grads, stats


def _grads_close(actual, expected):
    """Relative error 1e-10 with an absolute floor, for the biases before a
    train-mode norm (gradient zero, up to rounding)."""
    return (actual - expected).norm() <= 1e-10 * max(expected.norm(), 1.0)


def _graph_nodes(tensors):
    """Every autograd node behind ``tensors``."""
    nodes, todo = {}, [t.grad_fn for t in tensors]
    while todo:
        node = todo.pop()
        if node is not None and id(node) not in nodes:
            nodes[id(node)] = node
            todo.extend(n for n, _ in node.next_functions)
    return nodes.values()


def _rank(rank, init_file):
    torch.set_num_threads(1)
    x = images((2 * WORLD_SIZE, 3, 64, 64),
               torch.Generator().manual_seed(0)).double()
    whole, _ = _models('BN')
    whole_out, whole_grads, whole_stats = _step(whole, x)

    ref, ours = _models('SyncBN')
    _register_cpu_kernels()
    dist.init_process_group(
        'gloo',
        init_method=f'file://{init_file}',
        rank=rank,
        world_size=WORLD_SIZE)
    shard = x[2 * rank:2 * rank + 2]
    for model in (ref, ours):
        out, grads, stats = _step(model, shard)
        for a, b in zip(out, whole_out):
            assert rel_err(a, b[2 * rank:2 * rank + 2]) <= 1e-10
        for key, grad in grads.items():
            dist.all_reduce(grad)  # the whole batch's loss is the ranks' sum
            assert _grads_close(grad, whole_grads[key]), key
        for key, value in stats.items():
            torch.testing.assert_close(
                value, whole_stats[key], rtol=1e-10, atol=0, msg=key)
    ref_bytes, _ = saved_activation_bytes(ref, shard)
    ours_bytes, out = saved_activation_bytes(ours, shard)
    ours_ops = [
        n for n in _graph_nodes(out) if n.name() == '_BatchNormReLUBackward'
    ]
    assert ours_ops and all(n.group is not None for n in ours_ops)
    assert 0 < ours_bytes <= 0.75 * ref_bytes, (ours_bytes, ref_bytes)
    finish_distributed()


def test_across_processes_as_one_process_with_the_whole_batch(tmp_path):
    mp.spawn(
        _rank, args=(str(tmp_path / 'init'), ), nprocs=WORLD_SIZE, join=True)


def test_one_process_recomputes_as_with_batchnorm():
    """Not distributed, SyncBatchNorm normalises its own batch: the path then
    acts as for BatchNorm."""
    ref, ours = _models('SyncBN')
    x = images((2, 3, 64, 64)).double()
    ref_bytes, _ = saved_activation_bytes(ref, x)
    ours_bytes, _ = saved_activation_bytes(ours, x)
    assert 0 < ours_bytes <= 0.75 * ref_bytes
    ref.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)
    ref_out, ref_grads, _ = _step(ref, x)
    out, grads, _ = _step(ours, x)
    for a, b in zip(out, ref_out):
        assert rel_err(a, b) <= 1e-10
    for key, grad in grads.items():
        assert _grads_close(grad, ref_grads[key]), key
