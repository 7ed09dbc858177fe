"""Same keys, outputs and gradients as upstream mmdet 3.3 and mmseg 1.2
ResNeSt."""
import pytest
import torch
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream
from mmseg.models.backbones.resnest import ResNeSt as MMSegUpstream

from resnest_mm import MMDetResNeSt, MMSegResNeSt
from helpers import images, randomize_, rel_err

TOL = 1e-5
MMSEG_DILATED = dict(
    strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True)

CASES = {
    # name: (upstream class, our class, kwargs, input shape)
    'mmdet-default':
    (MMDetUpstream, MMDetResNeSt, dict(depth=50), (4, 3, 64, 64)),
    'mmdet-recipe':
    (MMDetUpstream, MMDetResNeSt,
     dict(depth=50, stem_channels=64, norm_eval=False,
          frozen_stages=1), (4, 3, 96, 64)),
    'mmdet-101-out13':
    (MMDetUpstream, MMDetResNeSt,
     dict(depth=101, stem_channels=128, norm_eval=False,
          out_indices=(1, 3)), (4, 3, 64, 64)),
    'mmdet-4s2x40d':
    (MMDetUpstream, MMDetResNeSt,
     dict(depth=50, radix=4, groups=2, base_width=40,
          norm_eval=False), (4, 3, 64, 64)),
    'mmdet-radix1': (MMDetUpstream, MMDetResNeSt,
                     dict(depth=50, radix=1, norm_eval=False), (4, 3, 64, 64)),
    'mmdet-caffe-no-avd': (MMDetUpstream, MMDetResNeSt,
                           dict(
                               depth=50,
                               style='caffe',
                               avg_down_stride=False,
                               reduction_factor=2,
                               norm_eval=False), (4, 3, 64, 64)),
    'mmdet-odd-size': (MMDetUpstream, MMDetResNeSt,
                       dict(depth=50, norm_eval=False), (4, 3, 75, 53)),
    'mmdet-plugin': (MMDetUpstream, MMDetResNeSt,
                     dict(
                         depth=50,
                         norm_eval=False,
                         plugins=[
                             dict(
                                 cfg=dict(type='ContextBlock', ratio=1. / 4),
                                 stages=(False, True, True, True),
                                 position='after_conv3')
                         ]), (4, 3, 64, 64)),
    'mmseg-default': (MMSegUpstream, MMSegResNeSt, dict(depth=50), (4, 3, 64,
                                                                    64)),
    'mmseg-dilated': (MMSegUpstream, MMSegResNeSt,
                      dict(depth=50, **MMSEG_DILATED), (4, 3, 64, 64)),
    'mmseg-dilated-multigrid':
    (MMSegUpstream, MMSegResNeSt,
     dict(depth=50, multi_grid=(1, 2, 4), **MMSEG_DILATED), (4, 3, 64, 64)),
    'mmseg-101-dilated-odd':
    (MMSegUpstream, MMSegResNeSt,
     dict(depth=101, stem_channels=128, **MMSEG_DILATED), (4, 3, 65, 47)),
}

LAYOUTS = {
    'nchw': torch.contiguous_format,
    'channels_last': torch.channels_last
}


def _build_pair(name, layout='nchw'):
    """Upstream and ours with the same weights, both in ``layout``, and the
    input shape."""
    upstream_cls, ours_cls, kwargs, shape = CASES[name]
    ref = randomize_(upstream_cls(**kwargs))
    ours = ours_cls(**kwargs)
    ours.load_state_dict(ref.state_dict())
    fmt = LAYOUTS[layout]
    return ref.to(memory_format=fmt), ours.to(memory_format=fmt), shape


@pytest.mark.parametrize('name', CASES)
def test_state_dict_keys_and_shapes_match(name):
    upstream_cls, ours_cls, kwargs, _ = CASES[name]
    ref, ours = upstream_cls(**kwargs).state_dict(), ours_cls(
        **kwargs).state_dict()
    assert list(ours) == list(ref)
    assert [v.shape for v in ours.values()] == [v.shape for v in ref.values()]


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('name', CASES)
def test_outputs_match_in_float32(name, train, layout):
    ref, ours, shape = _build_pair(name, layout)
    ref.train(train)
    ours.train(train)
    x = images(shape).contiguous(memory_format=LAYOUTS[layout])
    with torch.no_grad():
        out_ref, out_ours = ref(x), ours(x)
    assert len(out_ours) == len(out_ref)
    for a, b in zip(out_ours, out_ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= TOL
        # no layout change on the way
        assert a.is_contiguous(memory_format=LAYOUTS[layout])
    # Training updates the same BatchNorm statistics.
    for (key, a), b in zip(ours.state_dict().items(),
                           ref.state_dict().values()):
        if a.is_floating_point():
            assert rel_err(a, b) <= TOL, key


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('name', CASES)
def test_gradients_match_in_float64(name, train, layout):
    """Gradients, compared where rounding cannot flip a ReLU or max-pool
    decision.

    In fp32 a 1e-7 difference in a ReLU input near 0, or in a near tie of the
    stem's max pool, sends a gradient down another path: fp32 gradients of any
    two implementations differ by up to ~1e-3 for that reason alone. In fp64
    the two agree to 1e-10: the same function, the same gradient.
    """
    ref, ours, shape = _build_pair(name, layout)
    ref.double().train(train)
    ours.double().train(train)
    x = images(shape).double().contiguous(memory_format=LAYOUTS[layout])
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_ours = ref(x_ref), ours(x_ours)
    for a, b in zip(out_ours, out_ref):
        assert rel_err(a, b) <= 1e-10

    # A loss that weighs every output element differently.
    weights = [torch.randn(o.shape, dtype=o.dtype) for o in out_ref]
    sum(((o * w).sum() for o, w in zip(out_ref, weights))).backward()
    sum(((o * w).sum() for o, w in zip(out_ours, weights))).backward()
    assert rel_err(x_ours.grad, x_ref.grad) <= 1e-10
    ref_params, our_params = dict(ref.named_parameters()), dict(
        ours.named_parameters())
    last = f'layer4.{len(ref.layer4) - 1}'
    for key in [
            'stem.0.weight', 'layer1.0.conv2.fc1.weight',
            'layer2.0.conv2.bn0.weight', 'layer3.0.downsample.1.weight',
            f'{last}.conv2.fc2.bias', f'{last}.conv3.weight'
    ]:
        g_ref, g_ours = ref_params[key].grad, our_params[key].grad
        assert (g_ref is None) == (g_ours is None), key
        if g_ref is not None:
            assert rel_err(g_ours, g_ref) <= 1e-10, key


def test_with_cp_matches_plain_forward_and_backward():
    """Checkpointed blocks (fp64, as above) give upstream's plain outputs and
    gradients."""
    kwargs = dict(depth=50, norm_eval=False, with_cp=True, frozen_stages=1)
    ref = randomize_(MMDetUpstream(**{**kwargs, 'with_cp': False})).double()
    ours = MMDetResNeSt(**kwargs)
    ours.load_state_dict(ref.state_dict())
    ours.double()
    x = images((4, 3, 64, 64)).double()
    out_ref, out_ours = ref(x), ours(x)
    sum(o.sum() for o in out_ref).backward()
    sum(o.sum() for o in out_ours).backward()
    for a, b in zip(out_ours, out_ref):
        assert rel_err(a, b) <= 1e-10
    ref_params = dict(ref.named_parameters())
    for key, p in ours.named_parameters():
        # absolute floor: a bias before a train-mode BN has a zero gradient
        if p.requires_grad:
            torch.testing.assert_close(
                p.grad, ref_params[key].grad, rtol=1e-10, atol=1e-12)
