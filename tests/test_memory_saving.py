"""The memory-saving training path (resnest_mm.ops): same numbers as
upstream, less kept, and a self-check that turns it off where it would not
compute the same."""
import gc
import warnings

import pytest
import torch
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream
from mmdet.models.backbones.resnest import \
    SplitAttentionConv2d as UpstreamSplitAttention

from resnest_mm import ResNeSt, SplitAttentionConv2d
from resnest_mm.ops import MaxPool2d, functions, memory_saving
from resnest_mm.ops import path as memory_saving_path
from resnest_mm.ops import spatial_mean, torch_api
from helpers import (TWO_STAGES, images, randomize_, rel_err,
                     saved_activation_bytes)

#: the path's device-parametrised tests run on CUDA where there is one:
#: ``pytest tests/test_memory_saving.py -k cuda`` verifies a GPU
DEVICES = [
    'cpu',
    pytest.param(
        'cuda',
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason='no CUDA device'))
]


class OnThePath(torch.nn.Module):
    """A layer run as inside a backbone's forward, on the path."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        with memory_saving(x):
            return self.layer(x)


@pytest.fixture
def fresh_verdicts(monkeypatch):
    """The path's per-(device, dtype) self-check verdicts, empty for this
    test and restored after."""
    monkeypatch.setattr(memory_saving_path, '_verdicts', {})
    return memory_saving_path._verdicts


def test_training_keeps_two_fewer_split_sized_tensors_than_upstream():
    kwargs = dict(
        in_channels=64, channels=64, kernel_size=3, padding=1, radix=2)
    ours, ref = OnThePath(SplitAttentionConv2d(
        **kwargs)).train(), UpstreamSplitAttention(**kwargs)
    ref.load_state_dict(ours.layer.state_dict())
    ref.train()
    x = torch.randn(4, 64, 32, 32, requires_grad=True)
    ours_bytes, _ = saved_activation_bytes(ours, x)
    ref_bytes, _ = saved_activation_bytes(ref, x)
    split_tensor = 4 * 128 * 32 * 32 * 4  # (B, R*C, H, W) float32
    # upstream keeps its input, the conv output, the splits and the output
    assert ref_bytes - ours_bytes >= split_tensor * 0.99


def _autocast(amp):
    """bfloat16 autocast on the CPU (float16 there lacks conv kernels), or
    none."""
    return torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp)


@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'bf16-autocast'])
def test_backbone_training_step_keeps_a_quarter_less_than_upstream(amp):
    """Under autocast the norms take a bfloat16 conv output with float32
    parameters; upstream is counted under the same autocast. The weights'
    bfloat16 copies, kept by both alike, are not activations."""
    ref = MMDetUpstream(depth=50, norm_eval=False)
    ours = ResNeSt(depth=50)
    ours.load_state_dict(ref.state_dict())
    ref.train()  # upstream's train() returns None
    ours.train()
    x = images((2, 3, 64, 64))
    with _autocast(amp):
        ours_bytes, out = saved_activation_bytes(ours, x)
        ref_bytes, ref_out = saved_activation_bytes(ref, x)
    assert out[-1].dtype == ref_out[-1].dtype
    assert 0 < ours_bytes <= 0.75 * ref_bytes


def test_recompute_activations_off_keeps_more_and_matches_upstream():
    """``recompute_activations=False``: the plain path, upstream's function
    (fp64, as in test_upstream_equivalence), and more kept than with it
    on."""
    kwargs = dict(depth=50, norm_eval=False, frozen_stages=1, **TWO_STAGES)
    ref = randomize_(MMDetUpstream(**kwargs)).double()
    on = ResNeSt(**kwargs).double()
    off = ResNeSt(**kwargs, recompute_activations=False).double()
    on.load_state_dict(ref.state_dict())
    off.load_state_dict(ref.state_dict())
    ref.train()
    x = images((4, 3, 64, 64)).double()
    off_bytes, out_off = saved_activation_bytes(off.train(), x)
    on_bytes, _ = saved_activation_bytes(on.train(), x)
    assert off_bytes > 1.2 * on_bytes > 0
    out_ref = ref(x)
    sum(o.sum() for o in out_ref).backward()
    sum(o.sum() for o in out_off).backward()
    for a, b in zip(out_off, out_ref):
        assert rel_err(a, b) <= 1e-10
    ref_params = dict(ref.named_parameters())
    for key, p in off.named_parameters():
        if p.requires_grad:  # absolute floor: biases before a train-mode BN
            torch.testing.assert_close(
                p.grad, ref_params[key].grad, rtol=1e-10, atol=1e-12)


def _outputs_and_gradients(model, x, amp):
    """The model's outputs, input gradient and parameter gradients, each
    flattened to one fp64 vector, under a loss that weighs every output
    element differently; running statistics restored after."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = x.clone().requires_grad_()
    with _autocast(amp):
        outs = model(x)
    weights = [
        torch.linspace(-1, 1, o.numel(), dtype=x.dtype).view(o.shape)
        for o in outs
    ]
    sum((o.to(x.dtype) * w).sum() for o, w in zip(outs, weights)).backward()
    grads = [p.grad.flatten() for p in model.parameters()]
    result = [torch.cat([o.flatten() for o in outs]), x.grad, torch.cat(grads)]
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    return [t.double() for t in result]


def test_autocast_outputs_and_gradients_as_close_as_upstream():
    """Under bfloat16 autocast, ours (on the memory-saving path) is as close
    to the exact function as upstream under the same autocast.

    bfloat16 keeps 8 bits: upstream's own outputs are ~1e-2 off the fp64
    result and its gradients ~1e-1 (train-mode BN backward subtracts
    batch means), and the order of rounding differs between any two
    implementations, so the precision allows the reference's own error, not
    a fixed tolerance: ours must stay within 25% of it (the gradients'
    ratio varies from 0.96 to 1.11 with the seed). Running statistics
    (float32, from the bfloat16 conv outputs) match upstream's to 1e-2.
    """
    kwargs = dict(depth=50, norm_eval=False, **TWO_STAGES)
    ref = randomize_(MMDetUpstream(**kwargs))
    ours = ResNeSt(**kwargs)
    ours.load_state_dict(ref.state_dict())
    ref.train()
    ours.train()
    x = images((4, 3, 64, 64))
    exact = _outputs_and_gradients(ref.double(), x.double(), amp=False)
    ref.float()
    ref_amp = _outputs_and_gradients(ref, x, amp=True)
    ours_amp = _outputs_and_gradients(ours, x, amp=True)
    for what, a, b, e in zip(('outputs', 'input grad', 'weight grads'),
                             ours_amp, ref_amp, exact):
        assert rel_err(a, e) <= 1.25 * rel_err(b, e), what
    with _autocast(True):
        ref(x)
        out = ours(x)
    assert out[-1].dtype == torch.bfloat16
    assert out[-1].grad_fn.name() == 'ReluBackward0'  # after the block's sum
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        if 'running' in key or 'num_batches' in key:
            assert rel_err(value.double(),
                           ref_state[key].double()) <= 1e-2, key


@pytest.mark.parametrize(
    'momentum', [0.1, None], ids=['momentum', 'cumulative'])
def test_running_statistics_update_as_batchnorm(momentum):
    ref = randomize_(MMDetUpstream(depth=50, norm_eval=False))
    ours = ResNeSt(depth=50)
    ours.load_state_dict(ref.state_dict())
    for m in (*ref.modules(), *ours.modules()):
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = momentum
    ref.train()
    ours.train()
    for step in range(2):
        x = images((4, 3, 64, 64), torch.Generator().manual_seed(step))
        sum(o.sum()
            for o in ref(x)).backward()  # grad enabled: the recomputing path
        sum(o.sum() for o in ours(x)).backward()
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        if 'running' in key or 'num_batches' in key:
            assert rel_err(value.double(),
                           ref_state[key].double()) <= 1e-5, key


def test_gradient_of_the_attention_alone():
    """Only some inputs need a gradient: the recomputing ops must not assume
    all do."""
    ours = randomize_(ResNeSt(depth=14)).train()
    x = images((2, 3, 64, 64))
    out = ours(x)[-1].sum()
    block = ours.layer2[0].conv2
    grads = torch.autograd.grad(out, [block.fc1.weight, block.fc2.weight])
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_eval_and_no_grad_take_the_plain_path():
    ours = ResNeSt(depth=14).train()
    x = images((2, 3, 64, 64))
    with torch.no_grad():
        plain = ours(x)
    recomputed = ours(x)
    assert recomputed[-1].grad_fn is not None
    for a, b in zip(recomputed, plain):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    'layout', [torch.contiguous_format, torch.channels_last],
    ids=['nchw', 'channels_last'])
def test_max_pool_keeps_its_input_only_and_routes_gradients_as_torch(layout):
    """Where a window holds equal maxima, the gradient goes where
    ``nn.MaxPool2d``'s goes."""
    pool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    x = (torch.randn(2, 4, 9, 9, dtype=torch.float64) * 2).round()  # ties
    x = x.to(memory_format=layout).requires_grad_()
    grad = torch.randn(2, 4, 5, 5, dtype=torch.float64)

    def run(fn):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: saved.append(t) or t, lambda t: t):
            out = fn(x)
        return out, torch.autograd.grad(out, x, grad)[0], saved

    out, grad_x, saved = run(
        lambda t: functions.max_pool_keeping_input(t, pool))
    ref_out, ref_grad_x, ref_saved = run(pool)
    assert [t.dtype for t in ref_saved] == [torch.float64, torch.int64]
    assert len(saved) == 1 and saved[0] is x
    assert torch.equal(out, ref_out)
    assert torch.equal(grad_x, ref_grad_x)


def test_spatial_mean_gradient_is_a_broadcast_view():
    """The split-attention pooling: torch's mean in value and gradient, but
    the gradient is not made dense (in NCHW order, whatever ``x``'s layout),
    so adding it to the channels_last gradient of ``x`` stays cheap."""
    x = torch.randn(
        2, 8, 5, 6, dtype=torch.float64).to(
            memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(2, 8, 1, 1, dtype=torch.float64)
    out = spatial_mean(x)
    (grad_x, ) = torch.autograd.grad(out, x, grad)
    (ref_grad_x, ) = torch.autograd.grad(x.mean((2, 3), keepdim=True), x, grad)
    assert torch.equal(out, x.mean((2, 3), keepdim=True))
    torch.testing.assert_close(grad_x, ref_grad_x, rtol=1e-15, atol=0)
    assert grad_x.stride()[2:] == (0, 0)


def test_the_backbone_max_pool_keeps_no_indices_on_the_path_only():
    pool = MaxPool2d(kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    assert OnThePath(pool)(x).grad_fn.name() == '_MaxPool2dBackward'
    assert pool(x).grad_fn.name() == 'MaxPool2DWithIndicesBackward0'


def _train_step(model, x):
    """Outputs, parameter gradients and the state after one step, in fp64."""
    outs = model(x)
    weights = [torch.linspace(-1, 1, o.numel()).view(o.shape) for o in outs]
    sum((o * w.to(o)).sum() for o, w in zip(outs, weights)).backward()
    grads = {k: p.grad.double() for k, p in model.named_parameters()}
    state = {k: v.double() for k, v in model.state_dict().items()}
    return [o.double() for o in outs], grads, state


def _bn_relu_nodes(out):
    """Our norm-ReLU nodes in the graph that made ``out``."""
    seen, todo, found = set(), [out.grad_fn], 0
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        found += node.name() == '_BatchNormReLUBackward'
        todo += [n for n, _ in node.next_functions]
    return found


@pytest.mark.parametrize('device', DEVICES)
def test_path_computes_what_the_plain_path_does(device):
    """On each device: outputs, gradients and running statistics with the
    path on equal those with it off (fp64, so no ReLU decision flips)."""
    kwargs = dict(depth=14, norm_eval=False)
    on = randomize_(ResNeSt(**kwargs)).double().to(device).train()
    off = ResNeSt(**kwargs, recompute_activations=False).double().to(device)
    off.load_state_dict(on.state_dict())
    off.train()
    x = images((2, 3, 64, 64)).double().to(device)
    assert _bn_relu_nodes(on(x)[-1]) > 0 and _bn_relu_nodes(off(x)[-1]) == 0
    for a, b in zip(_train_step(on, x), _train_step(off, x)):
        if isinstance(a, dict):
            for key in b:
                torch.testing.assert_close(
                    a[key], b[key], rtol=1e-9, atol=1e-12, msg=key)
        else:
            for u, v in zip(a, b):
                assert rel_err(u, v) <= 1e-10


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize(
    'dtype', [torch.float32, torch.bfloat16], ids=['fp32', 'bf16'])
def test_self_check_passes_where_the_path_is_right(device, dtype,
                                                   fresh_verdicts):
    from resnest_mm.ops.self_check import compare_with_plain_path

    assert compare_with_plain_path(torch.device(device), dtype) == []
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        x = images((2, 3, 32, 32)).to(device)
        ResNeSt(depth=14).to(device).train()(x)
    assert fresh_verdicts == {(device, torch.float32): True}


@pytest.mark.parametrize(
    'fault', ['wrong rebuild', 'raises'], ids=['differs', 'raises'])
def test_a_path_that_differs_turns_itself_off_and_warns_once(
        fault, fresh_verdicts, monkeypatch):
    """An injected fault: the rebuilt activations are 1% off, or the batch
    norm kernel raises. The first forward's self-check sees it, warns once,
    and the model trains on the plain path, exactly as with the path off."""
    if fault == 'wrong rebuild':
        rebuild = functions.NormActState.rebuild
        monkeypatch.setattr(functions.NormActState, 'rebuild',
                            lambda state: rebuild(state) * 1.01)
        expected = 'gradient of the attention: relative error'
    else:

        def raises(*args):
            raise RuntimeError('no kernel for this device')

        monkeypatch.setattr(torch_api, 'batch_norm', raises)
        expected = 'the path raised RuntimeError: no kernel for this device'
    on = randomize_(ResNeSt(depth=14)).double().train()
    off = ResNeSt(depth=14, recompute_activations=False).double()
    off.load_state_dict(on.state_dict())
    off.train()
    x = images((2, 3, 64, 64)).double()
    with pytest.warns(UserWarning, match='disagrees') as record:
        got = _train_step(on, x)
    messages = [
        str(w.message) for w in record if 'resnest_mm' in str(w.message)
    ]
    assert len(messages) == 1 and expected in messages[0]
    assert 'report this message' in messages[0]
    assert fresh_verdicts == {('cpu', torch.float64): False}
    for a, b in zip(got, _train_step(off, x)):
        if isinstance(a, dict):
            for key in b:
                torch.testing.assert_close(a[key], b[key], msg=key)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once: no second warning
        assert _bn_relu_nodes(on(x)[-1]) == 0


def test_a_changed_private_contract_fails_naming_it_and_the_switch(
        fresh_verdicts, monkeypatch):
    monkeypatch.setattr(torch_api, '_SYNC_BN_FORWARD', ('self', 'input'))
    with pytest.raises(
            torch_api.TorchContractError,
            match='SyncBatchNorm.forward.*recompute_activations='
            'False'):
        ResNeSt(depth=14).train()(images((2, 3, 32, 32)))
    off = ResNeSt(depth=14, recompute_activations=False).train()
    assert len(off(images((2, 3, 32, 32)))) == 4


def test_sync_batch_norm_saved_tensors_are_checked(monkeypatch):
    """torch's SyncBatchNorm function must save five tensors; one that saves
    otherwise is refused before its values are unpacked by position."""

    def forward(ctx, c, weight, bias, *args):
        ctx.save_for_backward(c, weight, bias, c)
        return c.clone()

    from torch.nn.modules import _functions
    monkeypatch.setattr(_functions.SyncBatchNorm, 'forward', forward)
    monkeypatch.setattr(torch_api.dist, 'get_world_size', lambda group: 2)
    c, w = torch.randn(2, 4, 3, 3), torch.ones(4)
    with pytest.raises(
            torch_api.TorchContractError, match='saves 5 tensors.*found 4'):
        torch_api.sync_batch_norm(c, w, w, None, None, 1e-5, 0.1, object())


def test_only_a_relu_takes_the_path():
    """The path computes a ReLU: any other activation runs as itself."""
    from resnest_mm.ops import norm_act

    norm = torch.nn.BatchNorm2d(4).train()
    c = torch.randn(2, 4, 5, 5, requires_grad=True)
    with memory_saving(c):
        relu = norm_act(c, norm, torch.nn.ReLU())
        silu = norm_act(c, norm, torch.nn.SiLU())
    assert relu.grad_fn.name() == '_BatchNormReLUBackward'
    torch.testing.assert_close(silu, torch.nn.functional.silu(norm(c)))


def test_a_training_step_on_the_path_leaves_no_reference_cycles():
    """Cycles would wait for the cyclic GC, with all they reach (once, the
    whole autograd graph: ~166 MiB a step for ResNeSt-50)."""
    model = ResNeSt(depth=14).train()
    x = torch.randn(2, 3, 32, 32)
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            sum(out.sum() for out in model(x)).backward()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = sorted({type(obj).__name__ for obj in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not found, f'a training step left reference cycles of {found}'
