"""Pretrained weights in every known layout give the outputs of the model that
wrote them."""
import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
import types
import urllib.error
from pathlib import Path

import pytest
import torch
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmseg.models.backbones.resnest import ResNeSt as MMSegUpstream
from resnest.torch import resnest
from resnest.torch.resnet import Bottleneck, ResNet

from resnest_mm import (CorruptCheckpointError, MMDetResNeSt, MMSegResNeSt,
                        ResNeSt, weights)
from resnest_mm.tooling.references import authors_layer4
from resnest_mm.weights import load_pretrained
from helpers import images, randomize_, rel_err

ROOT = Path(__file__).resolve().parents[1]


def mmpretrain_resnest():
    """mmpretrain 1.2.0's ResNeSt, without running ``mmpretrain/__init__``.

    mmpretrain is installed with ``--no-deps`` (tools/setup.sh): its
    ``__init__`` imports the inference APIs and their dependencies
    (importlib_metadata, einops, modelindex, mat4py), which the backbone
    modules do not need; they import only torch, mmcv, mmengine and
    ``mmpretrain.registry``. So the packages on the way are bare namespaces.
    """
    root = Path(importlib.util.find_spec('mmpretrain').origin).parent
    for name, sub in (('mmpretrain', '.'), ('mmpretrain.models', 'models'),
                      ('mmpretrain.models.backbones', 'models/backbones')):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root / sub)]
            sys.modules[name] = package
    return importlib.import_module(
        'mmpretrain.models.backbones.resnest').ResNeSt


def stage_outputs(model, x):
    model.eval()  # upstream's eval() returns None
    with torch.no_grad():
        return model(x)


def mmengine_checkpoint(state_dict):
    """A checkpoint as mmengine's Runner writes it (message hub with
    HistoryBuffers included)."""
    hub = MessageHub('weights-test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_info('iter', 2)
    return dict(
        meta=dict(iter=2, mmengine_version='0.10.7'),
        state_dict=state_dict,
        message_hub=hub.state_dict())


def build_from_config(scope, config, **backbone):
    """A model from one of mmdet's or mmseg's installed ResNeSt configs,
    backbone overridden."""
    package = importlib.import_module(scope)
    cfg = Config.fromfile(
        os.path.join(
            os.path.dirname(package.__file__), '.mim/configs', config))
    cfg.model.pop('pretrained', None)
    cfg.model.backbone.update(
        init_cfg=None, norm_cfg=dict(type='BN'), **backbone)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg.model), cfg


MMDET_CONFIG = (
    'resnest/faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py')
MMSEG_CONFIG = 'resnest/resnest_s101-d8_fcn_4xb2-80k_cityscapes-512x1024.py'


# Each source: a model of an independent implementation with random weights,
# saved as that source saves it. Returns (the source's outputs for x, path,
# expected layout name, our model to load into, the keys left out).
def authors_source(tmp_path, x):
    """The authors' package, saved as their release files: a plain state dict,
    here in torch's legacy (pre-1.6) format to cover it too."""
    theirs = randomize_(resnest.resnest50()).eval()
    path = tmp_path / 'resnest50-release.pth'
    torch.save(theirs.state_dict(), path, _use_new_zipfile_serialization=False)
    with torch.no_grad():
        expected = (authors_layer4(theirs, x), )
    return (expected, path, "authors' release / timm",
            ResNeSt(depth=50, stem_channels=64), ['fc.weight', 'fc.bias'])


def mmpretrain_source(tmp_path, x):
    """mmpretrain's ImageNet classifier: ``backbone.`` + ``head.fc`` inside
    ``state_dict``."""
    theirs = randomize_(mmpretrain_resnest()(
        depth=50, stem_channels=64, out_indices=(0, 1, 2, 3)))
    state_dict = {f'backbone.{k}': v for k, v in theirs.state_dict().items()}
    state_dict.update({
        'head.fc.weight': torch.randn(1000, 2048),
        'head.fc.bias': torch.zeros(1000)
    })
    path = tmp_path / 'resnest50_mmpretrain.pth'
    torch.save(dict(meta=dict(), state_dict=state_dict), path)
    return (stage_outputs(theirs, x), path, 'mmpretrain classifier',
            ResNeSt(depth=50,
                    stem_channels=64), ['head.fc.weight', 'head.fc.bias'])


def ours_source(tmp_path, x):
    """Our own keys (and mmdet's): a plain state dict in the zip format."""
    ours = randomize_(
        ResNeSt(depth=26, radix=4, groups=2, base_width=40, avd_first=True))
    path = tmp_path / 'resnest26.pth'
    torch.save(ours.state_dict(), path)
    return (stage_outputs(ours, x), path,
            'ours (resnest_mm, or an mmdet/mmseg ResNeSt backbone)',
            ResNeSt(
                depth=26, radix=4, groups=2, base_width=40,
                avd_first=True), [])


@pytest.mark.parametrize(
    'source', [authors_source, mmpretrain_source, ours_source],
    ids=lambda f: f.__name__)
def test_each_layout_loads_to_the_source_outputs(source, tmp_path):
    x = images((2, 3, 64, 64))
    expected, path, layout, ours, dropped = source(tmp_path, x)
    before = ours.layer1[0].conv1.weight.clone()
    report = load_pretrained(ours, path)
    assert report.layout == layout
    assert report.missing == [] and report.unexpected == []
    assert report.dropped == dropped
    assert not torch.equal(ours.layer1[0].conv1.weight, before)
    actual = stage_outputs(ours, x)[-len(expected):]
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert rel_err(a, e) <= 1e-5


def test_init_cfg_loads_an_mmdet_detector_checkpoint_inside_a_detector(
        tmp_path):
    """A detector built from mmdet's zoo config with mmdet's own backbone,
    saved as mmengine saves it; a detector with ours and
    init_cfg=Pretrained(that file) gets its backbone."""
    source, _ = build_from_config('mmdet', MMDET_CONFIG, type=MMDetUpstream)
    randomize_(source.backbone)
    path = tmp_path / 'faster-rcnn_s50.pth'
    torch.save(mmengine_checkpoint(source.state_dict()), path)

    detector, _ = build_from_config('mmdet', MMDET_CONFIG, type='ResNeSt')
    detector.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    assert isinstance(detector.backbone, MMDetResNeSt)
    detector.init_weights()
    x = images((2, 3, 64, 64))
    reference = stage_outputs(source.backbone, x)
    for actual, expected in zip(
            stage_outputs(detector.backbone, x), reference):
        assert rel_err(actual, expected) <= 1e-5


def test_mmseg_segmentor_checkpoint_gives_the_backbone_in_our_keys():
    """The zoo's dilated ResNeSt FCN (depth 50 here) with mmseg's own backbone:
    the same function as ours (test_upstream_equivalence), so the keys and
    tensors are what matter."""
    segmentor, cfg = build_from_config(
        'mmseg', MMSEG_CONFIG, type=MMSegUpstream, depth=50)
    converted = weights.convert_checkpoint(
        mmengine_checkpoint(segmentor.state_dict()))
    assert converted.layout == 'mmdet/mmseg model'
    assert {k.split('.')[0]
            for k in converted.dropped} == {'decode_head', 'auxiliary_head'}
    backbone = segmentor.backbone.state_dict()
    assert converted.state_dict.keys() == backbone.keys()
    assert all(
        torch.equal(converted.state_dict[k], backbone[k]) for k in backbone)
    kwargs = {
        k: v
        for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')
    }
    report = weights.load_converted(MMSegResNeSt(**kwargs), converted)
    assert (report.architecture.name == 'ResNeSt-50'
            and report.architecture.stem_channels == 128)
    assert report.missing == [] and report.unexpected == []


@pytest.fixture
def resnest14_file(tmp_path):
    """A ResNeSt-14 (stem 64, radix 2) with random weights, in our layout."""
    model = randomize_(ResNeSt(depth=14, stem_channels=64), calibrate_on=None)
    path = tmp_path / 'resnest14.pth'
    torch.save(model.state_dict(), path)
    return model.state_dict(), path


def assert_holds(model, state_dict):
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state_dict.items())


def test_other_init_cfg_entries_run_first_and_extra_modules_are_reported(
        resnest14_file):
    state_dict, path = resnest14_file
    plugins = [
        dict(
            cfg=dict(type='ContextBlock', ratio=1 / 4), position='after_conv3')
    ]
    model = ResNeSt(
        depth=14,
        stem_channels=64,
        plugins=plugins,
        init_cfg=[
            dict(type='Constant', val=0.5, layer='Conv2d'),
            dict(type='Pretrained', checkpoint=str(path))
        ])
    model.init_weights()
    assert_holds(model, state_dict)  # Pretrained wins over Constant
    # The plugin is not in ImageNet weights: kept as the Constant init left it,
    # not an error.
    assert torch.all(
        model.layer1[0].context_block.channel_add_conv[0].weight == 0.5)
    report = load_pretrained(
        ResNeSt(depth=14, stem_channels=64, plugins=plugins), path)
    assert report.missing and all('.context_block.' in k
                                  for k in report.missing)


def test_deprecated_pretrained_argument_loads(resnest14_file):
    state_dict, path = resnest14_file
    with pytest.warns(UserWarning, match='pretrained is deprecated'):
        model = MMSegResNeSt(depth=14, pretrained=str(path))
    model.init_weights()
    assert_holds(model, state_dict)


def test_depth_mismatch_names_both_depths(tmp_path):
    path = tmp_path / 'resnest101.pth'
    torch.save(ResNeSt(depth=101, stem_channels=128).state_dict(), path)
    model = ResNeSt(depth=50, stem_channels=128)
    before = model.state_dict()
    with pytest.raises(ValueError) as info:
        load_pretrained(model, path)
    assert ('checkpoint is ResNeSt-101 (23 blocks in stage 3), '
            'model is ResNeSt-50 (6): '
            'build the model with depth=101') in str(info.value)
    assert_holds(model, before)  # refused before anything was loaded


def test_stem_width_and_radix_mismatch_name_the_fix(resnest14_file):
    _, path = resnest14_file
    with pytest.raises(ValueError) as info:
        load_pretrained(ResNeSt(depth=14, stem_channels=32, radix=1), path)
    message = str(info.value)
    assert ('checkpoint stem is 64 channels wide, model has stem_channels=32: '
            'set stem_channels=64') in message
    assert 'checkpoint has radix=2, model radix=1: set radix=2' in message


def test_unknown_layout_lists_the_expected_ones(tmp_path):
    # a plain ResNet's keys: no split-attention conv
    path = tmp_path / 'resnet50.pth'
    torch.save(
        {
            'conv1.weight': torch.zeros(64, 3, 7, 7),
            'layer1.0.conv2.weight': torch.zeros(64, 64, 3, 3)
        }, path)
    with pytest.raises(ValueError) as info:
        load_pretrained(ResNeSt(depth=14), path)
    message = str(info.value)
    assert message.startswith(
        'unknown checkpoint layout '
        '(first keys: conv1.weight, layer1.0.conv2.weight)')
    for name, keys in weights.LAYOUTS.values():
        assert f'{name}: {keys}' in message


def test_missing_weights_are_named_and_refused(resnest14_file, tmp_path):
    state_dict, _ = resnest14_file
    del state_dict['layer2.0.conv2.fc1.weight']
    path = tmp_path / 'partial.pth'
    torch.save(state_dict, path)
    with pytest.raises(
            ValueError,
            match=(r'lacks 1 weights of the backbone: '
                   r'layer2\.0\.conv2\.fc1\.weight')):
        load_pretrained(ResNeSt(depth=14, stem_channels=64), path)


def test_unexpected_keys_are_named_and_not_loaded(resnest14_file, tmp_path):
    state_dict, _ = resnest14_file
    state_dict['layer1.0.conv2.extra.weight'] = torch.zeros(1)
    path = tmp_path / 'extra.pth'
    torch.save(state_dict, path)
    report = load_pretrained(ResNeSt(depth=14, stem_channels=64), path)
    assert report.unexpected == ['layer1.0.conv2.extra.weight']
    assert 'not in the model, not loaded: layer1.0.conv2.extra.weight' in str(
        report)


def test_init_cfg_prefix_finds_a_backbone_elsewhere(resnest14_file, tmp_path):
    state_dict, _ = resnest14_file
    path = tmp_path / 'distilled.pth'
    torch.save({f'teacher.backbone.{k}': v
                for k, v in state_dict.items()}, path)
    model = ResNeSt(
        depth=14,
        stem_channels=64,
        init_cfg=dict(
            type='Pretrained',
            checkpoint=str(path),
            prefix='teacher.backbone.'))
    model.init_weights()
    assert_holds(model, state_dict)
    with pytest.raises(ValueError, match='unknown checkpoint layout'):
        # not found without it
        load_pretrained(ResNeSt(depth=14, stem_channels=64), path)


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_truncated_or_corrupt_file_says_so(resnest14_file, tmp_path, damage):
    _, path = resnest14_file
    data = path.read_bytes()
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(data[:len(data) //
                         2] if damage == 'truncated' else os.urandom(4096))
    with pytest.raises(
            CorruptCheckpointError,
            match='is not a readable PyTorch checkpoint .* '
            'probably truncated or corrupt'):
        load_pretrained(ResNeSt(depth=14, stem_channels=64), bad)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The torch hub cache in tmp_path, and every download failing as without
    network."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError('[Errno -2] Name or service not known')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    return tmp_path / 'hub' / 'checkpoints'


@pytest.mark.parametrize(
    'name, file', [('resnest50', 'resnest50-528c19ca.pth'),
                   ('open-mmlab://resnest101', 'resnest101-22405ba7.pth'),
                   ('resnest269', 'resnest269-0cc87c48.pth')])
def test_short_name_offline_says_which_file_to_put_where(
        offline_hub, name, file):
    url = ('https://github.com/zhanghang1989/ResNeSt/releases/download/'
           f'weights_step1/{file}')
    with pytest.raises(FileNotFoundError) as info:
        weights.resolve_checkpoint(name)
    assert f'could not download {url}' in str(info.value)
    assert f'put it at {offline_hub / file} (the torch hub cache' in str(
        info.value)


def test_short_name_uses_the_cached_file_after_checking_its_hash(
        offline_hub, resnest14_file, monkeypatch):
    state_dict, path = resnest14_file
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(weights.PUBLISHED, 'resnest14',
                        f'https://example.org/resnest14-{sha256}.pth')
    offline_hub.mkdir(parents=True)
    cached = offline_hub / f'resnest14-{sha256}.pth'
    cached.write_bytes(path.read_bytes())
    model = ResNeSt(
        depth=14,
        stem_channels=64,
        init_cfg=dict(type='Pretrained', checkpoint='resnest14'))
    model.init_weights()  # no download: it would fail
    assert_holds(model, state_dict)

    cached.write_bytes(path.read_bytes()[:-10])  # e.g. an interrupted copy
    with pytest.raises(
            RuntimeError,
            match=f'is not the published resnest14-{sha256}.pth: its '
            f'sha256 does not start with {sha256}. It is probably truncated'):
        weights.resolve_checkpoint('resnest14')


def test_convert_weights_tool_writes_our_layout_and_verifies(tmp_path):
    """End to end on a ResNeSt-14 built with the authors' own classes."""
    theirs = randomize_(
        ResNet(
            Bottleneck, [1, 1, 1, 1],
            radix=2,
            groups=1,
            bottleneck_width=64,
            deep_stem=True,
            stem_width=32,
            avg_down=True,
            avd=True))
    src, dst = tmp_path / 'authors14.pth', tmp_path / 'ours14.pth'
    torch.save(theirs.state_dict(), src)
    result = subprocess.run([
        sys.executable,
        str(ROOT / 'tools' / 'convert_weights.py'),
        str(src),
        str(dst), '--verify', '--size', '64'
    ],
                            capture_output=True,
                            text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ours = ResNeSt(depth=14, stem_channels=64)
    assert (f"layout:     authors' release / timm\n"
            f'network:    ResNeSt-14 (blocks per stage (1, 1, 1, 1), stem 64, '
            f'radix 2, groups 1)\n'
            f'parameters: {sum(p.numel() for p in ours.parameters()):,}\n'
            ) in result.stdout
    assert ("verify:     stage-4 output vs the authors' resnest package: "
            'largest difference' in result.stdout)
    # strict: exactly our keys
    ours.load_state_dict(torch.load(dst, weights_only=True))
    x = images((2, 3, 64, 64))
    with torch.no_grad():
        assert rel_err(
            stage_outputs(ours, x)[-1], authors_layer4(theirs.eval(),
                                                       x)) <= 1e-5
