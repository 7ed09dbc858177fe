"""Output shapes for every depth, out_indices and dilation setting, odd sizes
included."""
import importlib
import math

import pytest
import torch
from mmengine.registry import DefaultScope

from resnest_mm import ResNeSt
from resnest_mm.architectures import STEM_CHANNELS

DEPTH_BLOCKS = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    269: (3, 30, 48, 8)
}


def expected_shapes(batch,
                    h,
                    w,
                    strides=(1, 2, 2, 2),
                    out_indices=(0, 1, 2, 3),
                    base_channels=64):
    """The documented sizes: every stride-s step rounds up, ceil(size / s)."""
    shapes, stride = [], 4
    for i, s in enumerate(strides):
        stride *= s
        if i in out_indices:
            shapes.append((batch, 4 * base_channels * 2**i,
                           math.ceil(h / stride), math.ceil(w / stride)))
    return shapes


def run(model, shape):
    with torch.no_grad():
        return [tuple(o.shape) for o in model.eval()(torch.randn(shape))]


@pytest.mark.parametrize('depth', sorted(DEPTH_BLOCKS))
def test_every_depth(depth):
    model = ResNeSt(depth=depth, stem_channels=STEM_CHANNELS[depth])
    assert tuple(len(getattr(model, f'layer{i + 1}'))
                 for i in range(4)) == DEPTH_BLOCKS[depth]
    assert run(model, (1, 3, 64, 64)) == expected_shapes(1, 64, 64)


@pytest.mark.parametrize('out_indices', [(0, ), (3, ), (1, 2), (0, 1, 2, 3)])
def test_out_indices(out_indices):
    model = ResNeSt(depth=14, out_indices=out_indices)
    assert run(model, (2, 3, 64, 64)) == expected_shapes(
        2, 64, 64, out_indices=out_indices)


def test_fewer_stages():
    model = ResNeSt(
        depth=14,
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(0, 1, 2))
    assert run(model, (1, 3, 64, 64)) == expected_shapes(
        1, 64, 64, strides=(1, 2, 2), out_indices=(0, 1, 2))
    assert not hasattr(model, 'layer4')


@pytest.mark.parametrize('strides,dilations,output_stride', [
    ((1, 2, 2, 2), (1, 1, 1, 1), 32),
    ((1, 2, 2, 1), (1, 1, 1, 2), 16),
    ((1, 2, 1, 1), (1, 1, 2, 4), 8),
])
@pytest.mark.parametrize('size', [(64, 64), (225, 223), (33, 33)])
def test_dilation_settings_and_odd_sizes(strides, dilations, output_stride,
                                         size):
    model = ResNeSt(
        depth=14, strides=strides, dilations=dilations, contract_dilation=True)
    shapes = run(model, (1, 3, *size))
    assert shapes == expected_shapes(1, *size, strides=strides)
    assert shapes[-1][2:] == tuple(math.ceil(s / output_stride) for s in size)


def test_documented_odd_sizes():
    """The example in the ResNeSt docstring."""
    assert [s[2:]
            for s in run(ResNeSt(depth=14), (1, 3, 225, 223))] == [(57, 56),
                                                                   (29, 28),
                                                                   (15, 14),
                                                                   (8, 7)]
    assert [s[2:] for s in run(ResNeSt(depth=14), (1, 3, 33, 33))] == [(9, 9),
                                                                       (5, 5),
                                                                       (3, 3),
                                                                       (2, 2)]


@pytest.mark.parametrize(
    'kwargs',
    [
        dict(radix=4, groups=2, base_width=40),  # ablation width 4s2x40d
        dict(radix=1, groups=4, base_width=24),  # 1s4x24d
        dict(avd_first=True),
        dict(deep_stem=False, avg_down=False),
        dict(base_channels=32),
    ])
def test_variants(kwargs):
    model = ResNeSt(depth=26, **kwargs)
    base = kwargs.get('base_channels', 64)
    assert run(model, (2, 3, 48, 40)) == expected_shapes(
        2, 48, 40, base_channels=base)


def assert_introspection_matches(model, h=64, w=96):
    """``out_channels``/``out_strides`` against a real forward.

    ``h`` and ``w`` differ and are multiples of every stride, so each
    output size is exactly the input size over its stride.
    """
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, h, w))
    assert len(model.out_channels) == len(model.out_strides) == len(outs)
    for out, channels, stride in zip(outs, model.out_channels,
                                     model.out_strides):
        assert out.shape[1:] == (channels, h // stride, w // stride)
    return outs


@pytest.mark.parametrize('depth', sorted(DEPTH_BLOCKS))
def test_out_channels_and_strides_every_depth(depth):
    # narrow (base_channels 8) so that even ResNeSt-269 runs in a moment
    model = ResNeSt(depth=depth, base_channels=8, stem_channels=16)
    assert_introspection_matches(model)
    assert model.out_channels == (32, 64, 128, 256)
    assert model.out_strides == (4, 8, 16, 32)


OS8 = dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))  # mmseg's D8
OS16 = dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))


@pytest.mark.parametrize(
    'kwargs, channels, strides',
    [
        (dict(num_stages=1, strides=(1, ), dilations=(1, ), out_indices=(0, )),
         (256, ), (4, )),
        (dict(
            num_stages=2, strides=(1, 2), dilations=(1, 1),
            out_indices=(0, 1)), (256, 512), (4, 8)),
        (dict(
            num_stages=3,
            strides=(1, 2, 2),
            dilations=(1, 1, 1),
            out_indices=(1, 2)), (512, 1024), (8, 16)),
        (dict(
            num_stages=3,
            strides=(2, 2, 1),
            dilations=(1, 1, 2),
            out_indices=(0, 2)), (256, 1024), (8, 16)),
        (dict(out_indices=(3, )), (2048, ), (32, )),
        (dict(out_indices=(0, 3)), (256, 2048), (4, 32)),
        # forward returns stage order, whatever the order given
        (dict(out_indices=(2, 0)), (256, 1024), (4, 16)),
        (dict(**OS8, contract_dilation=True), (256, 512, 1024, 2048),
         (4, 8, 8, 8)),
        (dict(**OS8, multi_grid=(1, 2)), (256, 512, 1024, 2048), (4, 8, 8, 8)),
        (dict(**OS16, out_indices=(2, 3)), (1024, 2048), (16, 16)),
        (dict(style='caffe', **OS16), (256, 512, 1024, 2048), (4, 8, 16, 16)),
        (dict(style='caffe', out_indices=(1, 3)), (512, 2048), (8, 32)),
        (dict(deep_stem=False, avg_down=False, avg_down_stride=False),
         (256, 512, 1024, 2048), (4, 8, 16, 32)),
        (dict(
            base_channels=32, radix=4, groups=2, base_width=40,
            avd_first=True), (128, 256, 512, 1024), (4, 8, 16, 32)),
    ])
def test_out_channels_and_strides_settings(kwargs, channels, strides):
    model = ResNeSt(depth=26, **kwargs)
    assert_introspection_matches(model)
    assert (model.out_channels, model.out_strides) == (channels, strides)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_registry_entries_report_out_channels_and_strides(scope):
    """What ``type='ResNeSt'`` builds in a config: mmseg's D8 setting."""
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type='ResNeSt', depth=14, **OS8))
    assert type(model).__name__ == {
        'mmdet': 'MMDetResNeSt',
        'mmseg': 'MMSegResNeSt'
    }[scope]
    assert_introspection_matches(model)
    assert model.out_strides == (4, 8, 8, 8)
