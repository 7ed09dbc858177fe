"""Where we differ from upstream on purpose: its defects fixed, bad input
refused early."""
import pytest
import torch
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream

from resnest_mm import ResNeSt, SplitAttentionConv2d
from helpers import images, randomize_, rel_err


def test_zero_init_residual_zeroes_last_norm_of_every_block():
    model = ResNeSt(depth=26, zero_init_residual=True)
    model.init_weights()
    blocks = [b for i in range(1, 5) for b in getattr(model, f'layer{i}')]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.all(block.norm3.weight == 0) and torch.all(
            block.norm3.bias == 0)
        assert torch.all(block.norm1.weight == 1)
    # Each block then starts as an identity on the residual path.
    x = torch.randn(1, 256, 8, 8).relu()
    assert torch.equal(model.eval().layer1[1](x), x)


def test_zero_init_residual_off_keeps_norms_at_one():
    model = ResNeSt(depth=14, zero_init_residual=False)
    model.init_weights()
    for i in range(1, 5):
        assert torch.all(getattr(model, f'layer{i}')[0].norm3.weight == 1)


def test_upstream_never_applies_zero_init_residual():
    """The defect we fix: upstream checks ``block is Bottleneck`` (ResNet's),
    never true for ResNeSt."""
    model = MMDetUpstream(depth=50, zero_init_residual=True)
    model.init_weights()
    assert torch.all(model.layer1[0].bn3.weight == 1)


def test_train_and_eval_return_the_module():
    model = ResNeSt(depth=14)
    assert model.train() is model and model.training
    assert model.eval() is model and not model.training
    assert MMDetUpstream(depth=50).eval() is None  # the upstream defect


def test_norm_eval_and_frozen_stages():
    model = ResNeSt(depth=14, norm_eval=True, frozen_stages=2).train()
    assert all(not m.training for m in model.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    assert all(not p.requires_grad for p in model.stem.parameters())
    assert all(not p.requires_grad for p in model.layer2.parameters())
    assert all(p.requires_grad for p in model.layer3.parameters())
    model = ResNeSt(depth=14, frozen_stages=1).train()
    assert not model.layer1.training and model.layer2.training


def test_batch_size_one_trains_with_running_stats_in_attention():
    model = randomize_(ResNeSt(depth=26)).train()
    attention_norms = [
        m.conv2.norm1 for i in range(1, 5)
        for m in getattr(model, f'layer{i}')
    ]
    before = [n.running_mean.clone() for n in attention_norms]
    stem_before = model.stem[1].running_mean.clone()
    x = torch.randn(1, 3, 64, 64)
    outs = model(x)
    sum(o.sum() for o in outs).backward()
    assert all(torch.isfinite(o).all() for o in outs)
    # The attention norms used, and kept, their running statistics ...
    assert all(
        torch.equal(n.running_mean, b)
        for n, b in zip(attention_norms, before))
    assert all(n.weight.grad is not None for n in attention_norms)
    # ... while the other norms trained as usual.
    assert not torch.equal(model.stem[1].running_mean, stem_before)


def test_batch_size_one_equals_attention_norm_in_eval_mode():
    """The documented behaviour, against upstream with only its attention norms
    in eval mode."""
    ref = randomize_(MMDetUpstream(depth=50, norm_eval=False))
    ours = ResNeSt(depth=50)
    ours.load_state_dict(ref.state_dict())
    ref.train()
    ours.train()
    for m in ref.modules():
        if m.__class__.__name__ == 'SplitAttentionConv2d':
            m.norm1.eval()
    x = images((1, 3, 128, 128))
    for a, b in zip(ours(x), ref(x)):
        assert rel_err(a, b) <= 1e-5


def test_upstream_fails_on_batch_size_one():
    with pytest.raises(
            ValueError, match='Expected more than 1 value per channel'):
        model = MMDetUpstream(depth=50, norm_eval=False)
        model.train()
        model(torch.randn(1, 3, 64, 64))


def test_split_attention_radix_one_is_a_sigmoid_gate():
    conv = randomize_(
        SplitAttentionConv2d(32, 32, 3, padding=1, radix=1),
        calibrate_on=None).eval()
    x = torch.randn(2, 32, 9, 9)
    with torch.no_grad():
        feat = conv.relu(conv.norm0(conv.conv(x)))
        gate = conv.fc2(
            conv.relu(conv.norm1(conv.fc1(feat.mean((2, 3), keepdim=True)))))
        assert rel_err(conv(x), feat * gate.sigmoid()) <= 1e-6


def test_split_attention_weights_sum_to_one_across_splits():
    """With every split equal, weights that sum to 1 over the splits return
    that split.

    Groups are radix-major (group ``g = r * K + k``), so equal splits need
    equal weights and equal input channels for every radix index ``r``.
    """
    radix, channels = 4, 16
    conv = randomize_(
        SplitAttentionConv2d(32, channels, 1, radix=radix, groups=2),
        calibrate_on=None).eval()
    with torch.no_grad():
        for t in (conv.conv.weight, conv.norm0.weight, conv.norm0.bias,
                  conv.norm0.running_mean, conv.norm0.running_var):
            per_radix = t.view(radix, channels, *t.shape[1:])
            per_radix[1:] = per_radix[0]
        x = torch.randn(2, 1, 8, 5, 5).expand(2, radix, 8, 5,
                                              5).reshape(2, 32, 5, 5)
        split = conv.relu(conv.norm0(conv.conv(x)))[:, :channels]
        assert rel_err(conv(x), split) <= 1e-6


@pytest.mark.parametrize('shape', [(3, 64, 64), (1, 1, 3, 64, 64),
                                   (2, 4, 64, 64), (2, 1, 64, 64)])
def test_bad_input_shape_is_refused(shape):
    with pytest.raises(ValueError, match=r'\(N, 3, H, W\)'):
        ResNeSt(depth=14)(torch.randn(shape))


@pytest.mark.parametrize('kwargs,match', [
    (dict(depth=18), r'valid depths: \[14, 26, 50, 101, 152, 200, 269\]'),
    (dict(depth=50, radix=0), 'radix must be >= 1'),
    (dict(depth=50, out_indices=(0, 4)), r'subset of \(0, 1, 2, 3\)'),
    (dict(depth=50, num_stages=3), 'num_stages=3'),
    (dict(depth=50, strides=(1, 2, 2)), 'must each have num_stages=4 entries'),
    (dict(depth=50,
          dilations=(1, 1, 2)), 'must each have num_stages=4 entries'),
    (dict(depth=50, num_stages=5), 'num_stages must be 1..4'),
    (dict(depth=50, style='tf'), "'pytorch' or 'caffe'"),
    (dict(depth=50, frozen_stages=5), r'frozen_stages must be in -1..4'),
    (dict(depth=50, multi_grid=(1, 2)), 'multi_grid'),
    (dict(depth=50, stem_channels=33), 'stem_channels must be even'),
])
def test_bad_config_is_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNeSt(**kwargs)
