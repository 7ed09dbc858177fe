"""DropBlock, stochastic depth and DCNv2 in the split-attention conv."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops import ModulatedDeformConv2dPack
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream

from resnest_mm import MMDetResNeSt, ResNeSt, ResNeStBottleneck
from resnest_mm.dropblock import DropBlock2d
from helpers import images, randomize_, rel_err

DCN = dict(type='DCNv2', deform_groups=2, fallback_on_stride=False)
DCN_STAGES = (False, True, True, True)


def _blocks(model):
    return [b for name in model.res_layers for b in getattr(model, name)]


# DropBlock -------------------------------------------------------------------


def _expected_dropped_fraction(p, size, bs=3):
    """The paper's sampling, counted: a pixel is kept if none of the block
    positions covering it (up to bs x bs, fewer at the border) starts a
    block."""
    valid = size - bs + 1
    gamma = p / bs**2 * size**2 / valid**2
    per_row = torch.tensor(
        [min(r, valid - 1) - max(0, r - bs + 1) + 1 for r in range(size)],
        dtype=torch.float64)
    return (1 -
            (1 - gamma)**(per_row[:, None] * per_row[None, :])).mean().item()


@pytest.mark.parametrize('p', [0.1, 0.2])
def test_dropblock_drops_about_drop_prob_in_whole_3x3_blocks(p):
    drop = DropBlock2d(p).train()
    x = torch.ones(4, 32, 48, 48)
    out = drop(x)
    dropped = out == 0
    fraction = dropped.float().mean().item()
    # Overlapping blocks make it a little less than p: 0.096 for 0.1, 0.18 for
    # 0.2.
    assert abs(fraction - p) < 0.02
    assert abs(fraction - _expected_dropped_fraction(p, 48)) < 0.003
    # The dropped set is a union of whole 3x3 squares: every dropped pixel lies
    # in a 3x3 window that is dropped entirely.
    full_windows = F.avg_pool2d(dropped.float(), 3, stride=1) == 1
    covered = F.max_pool2d(
        F.pad(full_windows.float(), (2, 2, 2, 2)), 3, stride=1) == 1
    assert torch.equal(covered, dropped)
    # Kept activations are scaled by numel / kept.
    kept = out[~dropped]
    torch.testing.assert_close(kept,
                               torch.full_like(kept,
                                               x.numel() / kept.numel()))


def test_dropblock_keeps_the_mean_in_expectation():
    """At a high rate a wrong scale shows: 1 / (1 - p) instead of numel / kept
    is 20 % off."""
    drop = DropBlock2d(0.5).train()
    x = torch.rand(2, 8, 16, 16) + 0.5
    means = torch.stack([drop(x).mean() for _ in range(400)])
    assert abs(means.mean().item() / x.mean().item() - 1) < 0.01
    assert means.std() > 0  # it does drop


def test_dropblock_is_the_identity_in_eval_and_at_rate_zero():
    x = torch.randn(2, 4, 8, 8)
    assert DropBlock2d(0.5).eval()(x) is x
    assert DropBlock2d(0.).train()(x) is x


def test_dropblock_keeps_memory_format_and_dtype():
    drop = DropBlock2d(0.3).train()
    x = torch.randn(2, 16, 12, 12)
    torch.manual_seed(1)
    ref = drop(x)
    torch.manual_seed(1)
    out = drop(x.to(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, ref)
    # float16 with more elements than float16 can count: the scale stays
    # finite.
    half = drop(torch.ones(1, 64, 40, 40, dtype=torch.float16))
    assert half.dtype == torch.float16
    assert abs(half.float().mean().item() - 1) < 1e-2


@pytest.mark.parametrize('size', [1, 2])
def test_dropblock_on_maps_smaller_than_the_block(size):
    """The block shrinks to the map; dropping everything gives zeros, not
    NaN."""
    drop = DropBlock2d(0.9).train()
    x = torch.ones(64, 1, size, size)
    out = drop(x)
    per_map = out.flatten(1)
    # With the block clipped to the map, each map is dropped or kept whole.
    assert ((per_map == 0).all(1) | (per_map > 0).all(1)).all()
    assert abs((per_map == 0).all(1).float().mean().item() - 0.9) < 0.15
    single = [drop(torch.ones(1, 1, size, size)) for _ in range(50)]
    assert any((o == 0).all() for o in single)
    assert all(torch.isfinite(o).all() for o in single)


# Stochastic depth ------------------------------------------------------------


def test_drop_path_rate_rises_linearly_over_all_blocks():
    model = ResNeSt(depth=50, drop_path_rate=0.3)
    blocks = _blocks(model)
    assert blocks[0].drop_path is None  # rate 0: no module
    rates = [0.] + [b.drop_path.drop_prob for b in blocks[1:]]
    assert rates == pytest.approx([0.3 * i / 15 for i in range(16)])


def test_drop_path_drops_whole_residual_branches_per_sample():
    block = randomize_(
        ResNeStBottleneck(64, 16, drop_path_rate=0.5),
        calibrate_on=(8, 64, 6, 6))
    block.eval()
    block.drop_path.train()  # norms in eval: only the drop is random
    seen = {}
    block.drop_path.register_forward_hook(
        lambda m, args, out: seen.update(branch=args[0], dropped=out))
    x = torch.randn(400, 64, 6, 6)
    with torch.no_grad():
        out = block(x)
    branch, dropped = seen['branch'], seen['dropped']
    is_dropped = (dropped == 0).flatten(1).all(1)
    kept = ~is_dropped
    assert abs(is_dropped.float().mean().item() - 0.5) < 0.1
    assert (branch.flatten(1).abs().amax(1) >
            0).all()  # no branch was zero before
    # 1 / keep_prob
    torch.testing.assert_close(dropped[kept], branch[kept] * 2)
    # Applied to the branch before the sum with the identity.
    assert torch.equal(out, torch.relu(dropped + x))


# The options off, in eval, and with checkpointing ----------------------------


def test_options_off_build_nothing_new():
    names = [n for n, _ in ResNeSt(depth=50).named_modules()]
    off = ResNeSt(
        depth=50,
        drop_path_rate=0.,
        dropblock_prob=0.,
        dcn=DCN,
        stage_with_dcn=(False, ) * 4)
    assert [n for n, _ in off.named_modules()] == names
    assert not any('drop' in n or 'offset' in n for n in names)
    # On, they add modules but no state: checkpoints stay interchangeable.
    on = ResNeSt(depth=50, drop_path_rate=0.2, dropblock_prob=0.1)
    assert list(on.state_dict()) == list(ResNeSt(depth=50).state_dict())


def test_dropblock_sits_where_the_authors_put_it():
    model = ResNeSt(depth=50, dropblock_prob=0.1)
    for stage, name in enumerate(model.res_layers):
        for block in getattr(model, name):
            drops = [block.dropblock1, block.conv2.dropblock, block.dropblock3]
            if stage < 2:
                assert drops == [None] * 3
            else:
                assert all(d.drop_prob == 0.1 and d.block_size == 3
                           for d in drops)


def test_regularisers_are_exactly_the_identity_in_eval():
    ref = randomize_(ResNeSt(depth=14)).eval()
    reg = ResNeSt(depth=14, drop_path_rate=0.5, dropblock_prob=0.5)
    reg.load_state_dict(ref.state_dict())
    reg.eval()
    x = images((2, 3, 64, 64))
    with torch.no_grad():
        for a, b in zip(reg(x), ref(x)):
            assert torch.equal(a, b)
        reg.train()  # and they do act in training
        ref.train()
        assert not torch.equal(reg(x)[-1], ref(x)[-1])


def test_with_cp_redraws_the_same_masks():
    """Checkpointing replays the RNG: same outputs and gradients as without
    it."""
    kwargs = dict(depth=14, drop_path_rate=0.5, dropblock_prob=0.3)
    plain = randomize_(ResNeSt(**kwargs)).train()
    ckpt = ResNeSt(with_cp=True, **kwargs).train()
    ckpt.load_state_dict(plain.state_dict())
    x = images((2, 3, 64, 64))
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(3)
        xr = x.clone().requires_grad_()
        out = model(xr)
        sum((o * o).mean() for o in out).backward()
        grads.append([xr.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    'kwargs', [
        dict(drop_path_rate=0.3),
        dict(dropblock_prob=0.2),
        dict(dcn=DCN, stage_with_dcn=DCN_STAGES),
        dict(
            drop_path_rate=0.3,
            dropblock_prob=0.2,
            dcn=DCN,
            stage_with_dcn=DCN_STAGES),
    ],
    ids=['drop-path', 'dropblock', 'dcnv2', 'all'])
def test_each_option_trains_a_step(kwargs):
    model = randomize_(ResNeSt(depth=14, **kwargs)).train()
    for m in model.modules():
        if isinstance(m, ModulatedDeformConv2dPack):
            m.init_weights()  # zero offsets, as built
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = sum((o * o).mean() for o in model(images((2, 3, 64, 64))))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters())
    optimizer.step()
    after = model.state_dict()
    assert not torch.equal(after['layer4.0.conv3.weight'],
                           before['layer4.0.conv3.weight'])
    if 'dcn' in kwargs:  # the offsets learn, though they start at zero
        offset = 'layer2.0.conv2.conv.conv_offset.weight'
        assert torch.equal(before[offset], torch.zeros_like(before[offset]))
        assert after[offset].abs().sum() > 0


@pytest.mark.parametrize('kwargs,match', [
    (dict(drop_path_rate=1.), r'drop_path_rate must be in \[0, 1\), got 1.0'),
    (dict(drop_path_rate=-0.1), r'drop_path_rate must be in \[0, 1\)'),
    (dict(dropblock_prob=1.), r'dropblock_prob must be in \[0, 1\), got 1.0'),
    (dict(
        dropblock_prob=0.1,
        num_stages=2,
        strides=(1, 2),
        dilations=(1, 1),
        out_indices=(0, 1)),
     'dropblock_prob applies to stages 3 and 4, but num_stages=2'),
])
def test_bad_rates_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNeSt(depth=14, **kwargs)


# DCNv2 in the split-attention conv -------------------------------------------


def _dcn_pair(stride=1, dilation=1):
    """A plain block and a DCNv2 block with the same weights, in float64.

    Their split conv: 64 channels in, groups = cardinality 2 * radix 2 = 4.
    A strided pair strides in that conv (no avd pool).
    """

    def block(**kwargs):
        downsample = None
        if stride > 1:
            downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True),
                nn.Conv2d(256, 256, 1, bias=False), nn.BatchNorm2d(256))
        return ResNeStBottleneck(
            256,
            64,
            stride=stride,
            dilation=dilation,
            groups=2,
            base_width=32,
            avg_down_stride=False,
            downsample=downsample,
            **kwargs)

    plain = randomize_(block(), calibrate_on=(4, 256, 9, 9))
    dcn = block(dcn=DCN)
    missing, unexpected = dcn.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert sorted(missing) == [
        'conv2.conv.conv_offset.bias', 'conv2.conv.conv_offset.weight'
    ]
    assert isinstance(dcn.conv2.conv, ModulatedDeformConv2dPack)
    assert (dcn.conv2.conv.groups, dcn.conv2.conv.deform_groups) == (4, 2)
    return plain.double(), dcn.double()


@pytest.mark.parametrize('stride,dilation', [(1, 1), (2, 2)])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_dcnv2_with_zero_offsets_and_unit_masks_is_the_plain_block(
        stride, dilation, train):
    """Zero offsets sample the conv's own grid; masks of exactly 1 leave it
    unweighted.

    The mask is ``sigmoid`` of the last third of ``conv_offset``'s output, so
    zero offset weights with a mask bias of 50 give masks that are exactly 1
    in float64 (1 - sigmoid(50) = 2e-22 rounds away), and offsets exactly 0.
    """
    plain, dcn = _dcn_pair(stride, dilation)
    offset_conv = dcn.conv2.conv.conv_offset
    with torch.no_grad():
        offset_conv.weight.zero_()
        offset_conv.bias.zero_()
        # (offsets, offsets, masks) x 2 groups x 3x3
        offset_conv.bias[2 * 2 * 9:] = 50.
    assert torch.sigmoid(torch.tensor(50., dtype=torch.float64)) == 1
    plain.train(train)
    dcn.train(train)
    x = images((4, 256, 9, 9)).double()
    assert rel_err(dcn(x), plain(x)) <= 1e-12


def test_dcnv2_offsets_change_the_output():
    plain, dcn = _dcn_pair()
    plain.eval()
    dcn.eval()
    offset_conv = dcn.conv2.conv.conv_offset
    x = images((4, 256, 9, 9)).double()
    with torch.no_grad():
        offset_conv.bias[2 * 2 * 9:] = 50.  # unit masks
        assert rel_err(dcn(x), plain(x)) <= 1e-12
        offset_conv.bias[:2 * 2 * 9].uniform_(-1, 1)  # only the offsets move
        assert rel_err(dcn(x), plain(x)) > 1e-2
        offset_conv.bias[:2 * 2 * 9] = 0.
        offset_conv.weight.normal_(0, 0.05)  # offsets that depend on the input
        assert rel_err(dcn(x), plain(x)) > 1e-2


def test_dcnv2_matches_upstream_mmdet():
    """Same keys (``conv2.conv.conv_offset.*``), outputs and gradients as mmdet
    with DCNv2.

    Compared in float64: through random offsets, the fp32 rounding differences
    of the two implementations grow to ~1e-5; in float64 they agree to 1e-10.
    """
    kwargs = dict(depth=50, norm_eval=False, stage_with_dcn=DCN_STAGES)
    # upstream pops from the dict
    ref = randomize_(MMDetUpstream(dcn=dict(DCN), **kwargs))
    # randomize_ leaves mmcv's DCN weights (not nn.Conv2d) at init
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, ModulatedDeformConv2dPack):
                m.weight.normal_(0, (2 / m.weight[0].numel())**0.5)
    dcn = dict(DCN)
    ours = MMDetResNeSt(dcn=dcn, **kwargs)
    assert dcn == DCN  # ours copies it
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert 'layer2.0.conv2.conv.conv_offset.weight' in ref.state_dict()
    assert 'layer1.0.conv2.conv.conv_offset.weight' not in ref.state_dict()
    ours.load_state_dict(ref.state_dict())
    ref.double().train()
    ours.double().train()
    x = images((4, 3, 64, 64)).double()
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_ours = ref(x_ref), ours(x_ours)
    for a, b in zip(out_ours, out_ref):
        assert rel_err(a, b) <= 1e-10
    weights = [torch.randn(o.shape, dtype=o.dtype) for o in out_ref]
    sum((o * w).sum() for o, w in zip(out_ref, weights)).backward()
    sum((o * w).sum() for o, w in zip(out_ours, weights)).backward()
    assert rel_err(x_ours.grad, x_ref.grad) <= 1e-10
    key = 'layer3.0.conv2.conv.conv_offset.weight'
    assert rel_err(ours.get_parameter(key).grad,
                   ref.get_parameter(key).grad) <= 1e-10


def test_dcnv2_starts_from_plain_imagenet_weights_with_zero_offsets(tmp_path):
    """The recipe's init: ImageNet weights (no offsets) load, the offsets stay
    zero.

    Kaiming init of every ``nn.Conv2d`` also hits ``conv_offset``; mmcv's own
    ``init_weights`` must zero it afterwards, as the pretrained file cannot.
    """
    plain = randomize_(ResNeSt(depth=14), calibrate_on=None)
    path = tmp_path / 'resnest14.pth'
    torch.save(plain.state_dict(), path)
    model = ResNeSt(
        depth=14,
        dcn=DCN,
        stage_with_dcn=DCN_STAGES,
        init_cfg=[
            dict(type='Kaiming', layer='Conv2d'),
            dict(type='Pretrained', checkpoint=str(path))
        ])
    model.init_weights()
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in plain.state_dict().items())
    offsets = [k for k in own if 'conv_offset' in k]
    assert len(offsets) == 6 and all(not own[k].any() for k in offsets)


def test_dcnv2_gives_the_same_result_in_channels_last():
    """mmcv's kernels misread channels_last tensors; our conv hands them
    contiguous ones."""
    _, dcn = _dcn_pair()
    dcn.float().train()
    with torch.no_grad():
        dcn.conv2.conv.conv_offset.weight.normal_(0, 0.05)
    x = images((4, 256, 9, 9))
    results = []
    for model, inp in ((dcn, x), (copy.deepcopy(dcn).to(
            memory_format=torch.channels_last),
                                  x.to(memory_format=torch.channels_last))):
        inp = inp.clone().requires_grad_()
        out = model(inp)
        (out *
         torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([
            out, inp.grad, model.conv2.conv.weight.grad,
            model.conv2.conv.conv_offset.weight.grad
        ])
    for a, b in zip(*results):
        assert rel_err(a, b) <= 1e-5
