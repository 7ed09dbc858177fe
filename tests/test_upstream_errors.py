"""Bad arguments raise what upstream raises for them (KeyError for an unknown
depth, AssertionError for the rest; found by running mmdet's and mmseg's own
backbone tests on our class), and also ValueError, with our message.

Each case first checks the reference: upstream's class raises that type."""
import pytest
from mmdet.models.backbones.resnest import Bottleneck as MMDetBottleneck
from mmdet.models.backbones.resnest import ResNeSt as MMDetResNeSt
from mmseg.models.backbones.resnest import ResNeSt as MMSegResNeSt

from resnest_mm import ResNeSt, ResNeStBottleneck

DCN = dict(type='DCN', deform_groups=1, fallback_on_stride=False)
PLUGIN = dict(
    cfg=dict(type='ContextBlock', ratio=1. / 16), position='after_conv3')

# (ResNeSt kwargs, the type upstream raises), from upstream's test_resnet.py
# and test_resnest.py
BACKBONE_CASES = {
    'unknown depth': (dict(depth=42), KeyError),
    'num_stages 0': (dict(depth=50, num_stages=0), AssertionError),
    'num_stages 5': (dict(depth=50, num_stages=5), AssertionError),
    'strides length':
    (dict(depth=50, strides=(1, ), dilations=(1, 1),
          num_stages=3), AssertionError),
    'dilations length': (dict(depth=50, dilations=(1, 1),
                              num_stages=4), AssertionError),
    'out_indices beyond num_stages': (dict(
        depth=50,
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(0, 3)), AssertionError),
    'style': (dict(depth=50, style='tensorflow'), AssertionError),
    'stage_with_dcn length': (dict(depth=50, dcn=DCN,
                                   stage_with_dcn=(True, )), AssertionError),
    'plugin stages length':
    (dict(depth=50,
          plugins=[dict(PLUGIN, stages=(False, True, True))]), AssertionError),
}
# (bottleneck kwargs, the type upstream raises)
BLOCK_CASES = {
    'style': (dict(style='tensorflow'), AssertionError),
    'plugin position':
    (dict(plugins=[dict(PLUGIN, position='after_conv4')]), AssertionError),
    'duplicate plugin names': (dict(plugins=[PLUGIN, PLUGIN]), AssertionError),
    'dcn with conv_cfg': (dict(dcn=DCN,
                               conv_cfg=dict(type='Conv')), AssertionError),
}


@pytest.mark.parametrize(
    'upstream', [MMDetResNeSt, MMSegResNeSt], ids=['mmdet', 'mmseg'])
@pytest.mark.parametrize('case', BACKBONE_CASES)
def test_backbone_raises_upstreams_type(case, upstream):
    kwargs, expected = BACKBONE_CASES[case]
    with pytest.raises(expected):
        upstream(**kwargs)
    with pytest.raises(expected) as caught:
        ResNeSt(**kwargs)
    assert isinstance(caught.value, ValueError)
    assert 'ResNeSt' in str(caught.value) or 'must' in str(caught.value)


@pytest.mark.parametrize('case', BLOCK_CASES)
def test_block_raises_upstreams_type(case):
    kwargs, expected = BLOCK_CASES[case]
    with pytest.raises(expected):
        MMDetBottleneck(inplanes=64, planes=16, **kwargs)
    with pytest.raises(expected) as caught:
        ResNeStBottleneck(inplanes=64, planes=16, **kwargs)
    assert isinstance(caught.value, ValueError)


def test_unknown_depth_message_is_plain_and_lists_the_depths():
    """KeyError would quote the message; ours reads as a sentence."""
    with pytest.raises(KeyError) as caught:
        ResNeSt(depth=42)
    assert str(caught.value).startswith('invalid ResNeSt depth 42; valid')
    assert '269' in str(caught.value)
