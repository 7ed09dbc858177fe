"""The training path that rebuilds the splits in backward: same numbers as
upstream, less kept."""
import pytest
import torch
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream
from mmdet.models.backbones.resnest import \
    SplitAttentionConv2d as UpstreamSplitAttention

from resnest_mm import ResNeSt, SplitAttentionConv2d
from helpers import images, randomize_, rel_err


def _saved_bytes(model, x):
    """Bytes of the distinct activation storages autograd keeps for backward
    (weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            storages[
                t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return sum(storages.values()), out


def test_training_keeps_two_fewer_split_sized_tensors_than_upstream():
    kwargs = dict(
        in_channels=64, channels=64, kernel_size=3, padding=1, radix=2)
    ours, ref = SplitAttentionConv2d(**kwargs).train(), UpstreamSplitAttention(
        **kwargs)
    ref.load_state_dict(ours.state_dict())
    ref.train()
    x = torch.randn(4, 64, 32, 32, requires_grad=True)
    ours_bytes, _ = _saved_bytes(ours, x)
    ref_bytes, _ = _saved_bytes(ref, x)
    split_tensor = 4 * 128 * 32 * 32 * 4  # (B, R*C, H, W) float32
    # upstream keeps its input, the conv output, the splits and the output
    assert ref_bytes - ours_bytes >= split_tensor * 0.99


def test_backbone_training_step_keeps_a_quarter_less_than_upstream(
        monkeypatch):
    """What ours keeps is counted where it decides: tensors its hooks store,
    not recipes."""
    import resnest_mm.backbone
    from resnest_mm.recomputed_ops import RecomputedActivations

    kept = {}

    class Counting(RecomputedActivations):

        def _pack(self, tensor):
            packed = super()._pack(tensor)
            if isinstance(packed, torch.Tensor) and packed.untyped_storage(
            ).data_ptr() not in weights:
                kept[packed.untyped_storage().data_ptr(
                )] = packed.untyped_storage().nbytes()
            return packed

    monkeypatch.setattr(resnest_mm.backbone, 'RecomputedActivations', Counting)
    ref = MMDetUpstream(depth=50, norm_eval=False)
    ours = ResNeSt(depth=50)
    ours.load_state_dict(ref.state_dict())
    ref.train()  # upstream's train() returns None
    ours.train()
    weights = {p.untyped_storage().data_ptr() for p in ours.parameters()}
    x = images((2, 3, 64, 64))
    ours(x)
    ref_bytes, _ = _saved_bytes(ref, x)
    assert 0 < sum(kept.values()) <= 0.75 * ref_bytes


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
