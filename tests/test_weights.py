"""Pretrained weights in every known layout give the outputs of the model that
wrote them."""
import hashlib
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import safetensors.torch
import torch
from mmdet.models.backbones.resnest import ResNeSt as MMDetUpstream
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import CheckpointLoader, get_external_models
from mmseg.models.backbones.resnest import ResNeSt as MMSegUpstream
from resnest.torch import resnest
from resnest.torch.resnet import Bottleneck, ResNet

from resnest_mm import (RELEASES, CorruptCheckpointError, MMDetResNeSt,
                        MMSegResNeSt, ResNeSt, convert_checkpoint, layouts,
                        resolve_checkpoint)
from resnest_mm.layouts import AUTHORS, LAYOUTS, Layout
from resnest_mm.releases import Release
from resnest_mm.weights import load_converted, load_pretrained
from resnest_tools.references import authors_layer4
from helpers import images, randomize_, rel_err, run, tool

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


def layout_name(prefix, scheme):
    """The name of the layout record for key scheme ``scheme`` at ``prefix``.
    """
    [name] = [
        layout.name for layout in LAYOUTS
        if (layout.prefix, layout.scheme.name) == (prefix, scheme)
    ]
    return name


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
    return (stage_outputs(ours, x), path, layout_name('', 'ours'),
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
    converted = convert_checkpoint(mmengine_checkpoint(segmentor.state_dict()))
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
    report = load_converted(MMSegResNeSt(**kwargs), converted)
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
    for layout in LAYOUTS:
        assert f'{layout.name}: {layout.keys}' in message


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


@pytest.mark.parametrize('name, file',
                         [('resnest50', 'resnest50-528c19ca.pth'),
                          ('resnest101', 'resnest101-22405ba7.pth'),
                          ('resnest269', 'resnest269-0cc87c48.pth')])
def test_short_name_offline_says_which_file_to_put_where(
        offline_hub, name, file):
    url = ('https://github.com/zhanghang1989/ResNeSt/releases/download/'
           f'weights_step1/{file}')
    with pytest.raises(FileNotFoundError) as info:
        resolve_checkpoint(name)
    assert f'could not download {url}' in str(info.value)
    assert f'put it at {offline_hub / file} (the torch hub cache' in str(
        info.value)


def test_short_name_uses_the_cached_file_after_checking_its_hash(
        offline_hub, resnest14_file, monkeypatch):
    state_dict, path = resnest14_file
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    monkeypatch.setitem(RELEASES, 'resnest14', Release('resnest14', 14,
                                                       sha256))
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
        resolve_checkpoint('resnest14')


@pytest.fixture(scope='module')
def authors14():
    """The authors' own classes at depth 14 (one block per stage), random
    weights, in eval mode; an input and their stage-4 output for it."""
    theirs = randomize_(
        ResNet(
            Bottleneck, [1, 1, 1, 1],
            radix=2,
            groups=1,
            bottleneck_width=64,
            deep_stem=True,
            stem_width=32,
            avg_down=True,
            avd=True)).eval()
    x = images((2, 3, 32, 32))
    with torch.no_grad():
        return theirs.state_dict(), x, authors_layer4(theirs, x)


def assert_gives(model, authors14):
    """``model``'s stage-4 output is the authors' network's."""
    _, x, expected = authors14
    assert rel_err(stage_outputs(model, x)[-1], expected) <= 1e-5


def test_a_layout_record_is_all_that_detection_needs(monkeypatch, authors14):
    """The authors' network saved from ``nn.DataParallel`` (keys under
    ``module.``) fits no layout until its record is added; then it is found,
    its classifier left out and its keys renamed, by that record alone."""
    checkpoint = {f'module.{k}': v for k, v in authors14[0].items()}
    with pytest.raises(ValueError, match='unknown checkpoint layout'):
        convert_checkpoint(checkpoint)
    data_parallel = Layout('module.', AUTHORS, 'authors, DataParallel',
                           'module.conv1.0.weight')
    monkeypatch.setattr(layouts, 'LAYOUTS', LAYOUTS + (data_parallel, ))
    converted = convert_checkpoint(checkpoint)
    assert (converted.layout, converted.prefix) == (data_parallel.name,
                                                    'module.')
    assert converted.dropped == ['module.fc.weight', 'module.fc.bias']
    ours = ResNeSt(depth=14, stem_channels=64)
    ours.load_state_dict(converted.state_dict)  # strict
    assert_gives(ours, authors14)


def test_a_key_scheme_elsewhere_is_named_by_where_it_sits(authors14):
    """Off the records' prefixes, at a known prefix or at ``prefix``."""
    state_dict = authors14[0]
    moved = convert_checkpoint(
        {f'backbone.{k}': v
         for k, v in state_dict.items()})
    assert moved.layout == "authors keys under 'backbone.'"
    assert moved.state_dict.keys() == convert_checkpoint(
        state_dict).state_dict.keys()
    teacher = convert_checkpoint(
        {f'teacher.{k}': v
         for k, v in state_dict.items()}, prefix='teacher.')
    assert teacher.layout == "authors keys under 'teacher.'"


def test_convert_weights_tool_writes_our_layout_and_verifies(
        tmp_path, authors14):
    """End to end on a ResNeSt-14 built with the authors' own classes."""
    src, dst = tmp_path / 'authors14.pth', tmp_path / 'ours14.pth'
    torch.save(authors14[0], src)
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
    assert_gives(ours, authors14)


def openmmlab_d2_file(state_dict):
    """OpenMMLab's ``resnest*_d2`` files as they were made (mmdet issue 5056):
    the authors' weights with ``conv1.*`` -> ``stem.*``, ``bn1.*`` ->
    ``stem.7.*``, ``fc`` and ``num_batches_tracked`` dropped, under
    ``state_dict`` next to an empty ``meta``."""
    converted = {}
    for key, value in state_dict.items():
        if key.endswith('num_batches_tracked') or key.startswith('fc.'):
            continue
        if key.startswith('conv1.'):
            key = 'stem.' + key[len('conv1.'):]
        elif key.startswith('bn1.'):
            key = 'stem.7.' + key[len('bn1.'):]
        converted[key] = value
    return dict(meta=dict(), state_dict=converted)


OPENMMLAB_FILES = {
    'resnest50': 'resnest50_d2-7497a55b.pth',
    'resnest101': 'resnest101_d2-f3b931b2.pth',
    'resnest200': 'resnest200_d2-ca88e41f.pth',
}


@pytest.fixture
def mmengine_home(tmp_path, monkeypatch):
    """mmengine's home (its open_mmlab.json overrides) in tmp_path."""
    home = tmp_path / 'mmengine'
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    return home


@pytest.mark.parametrize('name', sorted(OPENMMLAB_FILES))
@pytest.mark.parametrize('scheme', ['open-mmlab://', 'openmmlab://'])
def test_openmmlab_name_is_openmmlabs_file_offline_names_url_and_path(
        offline_hub, mmengine_home, name, scheme):
    """The URL is mmengine's (its openmmlab.json), OpenMMLab's own copy, not
    the authors' release; it is cached where mmengine's load_url caches."""
    url = ('https://download.openmmlab.com/pretrain/third_party/'
           f'{OPENMMLAB_FILES[name]}')
    assert get_external_models()[name] == url
    with pytest.raises(FileNotFoundError) as info:
        resolve_checkpoint(scheme + name)
    assert f'could not download {url}' in str(info.value)
    assert (f'put it at {offline_hub / OPENMMLAB_FILES[name]} '
            '(the torch hub cache' in str(info.value))


def test_openmmlab_file_in_the_cache_is_what_mmengine_reads_and_loads(
        offline_hub, mmengine_home, authors14):
    """An ``open-mmlab://resnest50`` file put where the offline message
    says: mmengine's own loader reads it from there without a download, and
    ours reads the same file through the layout detection, giving the
    outputs of the authors' network it was converted from (a ResNeSt-14
    here: the name only says where the file is)."""
    state_dict = authors14[0]
    offline_hub.mkdir(parents=True)
    torch.save(
        openmmlab_d2_file(state_dict),
        offline_hub / OPENMMLAB_FILES['resnest50'])
    from_mmengine = CheckpointLoader.load_checkpoint('open-mmlab://resnest50')
    assert torch.equal(from_mmengine['state_dict']['stem.7.weight'],
                       state_dict['bn1.weight'])

    ours = ResNeSt(depth=14, stem_channels=64)
    report = load_pretrained(ours, 'open-mmlab://resnest50')
    assert report.layout == layout_name('', 'ours')
    assert report.missing == [] and report.unexpected == []
    assert_gives(ours, authors14)


def test_openmmlab_name_follows_mmengines_user_table(mmengine_home,
                                                     resnest14_file):
    """$MMENGINE_HOME/open_mmlab.json overrides mmengine's table; a path
    there is relative to mmengine's home, as in load_from_openmmlab."""
    state_dict, path = resnest14_file
    mmengine_home.mkdir()
    (mmengine_home / 'mine.pth').write_bytes(path.read_bytes())
    (mmengine_home / 'open_mmlab.json').write_text(
        json.dumps({'resnest50': 'mine.pth'}))
    assert resolve_checkpoint('open-mmlab://resnest50') == str(mmengine_home /
                                                               'mine.pth')
    with pytest.raises(FileNotFoundError, match='not in mmengine'):
        resolve_checkpoint('open-mmlab://resnest999')


# The authors' detectron2 names, from zhanghang1989/detectron2-ResNeSt:
# detectron2/modeling/backbone/resnet.py (BasicStem with deep_stem: conv1_1,
# conv1_2, conv1_3, each a detectron2 Conv2d owning its norm as ``.norm``;
# BottleneckBlock: conv1, conv2, conv3, shortcut; stages res2..res5; the
# classifier ``linear``) and splat.py (SplAtConv2d: conv, bn0, fc1, bn1, fc2).
D2_STEM = {
    'conv1.0': 'stem.conv1_1',
    'conv1.1': 'stem.conv1_1.norm',
    'conv1.3': 'stem.conv1_2',
    'conv1.4': 'stem.conv1_2.norm',
    'conv1.6': 'stem.conv1_3',
    'bn1': 'stem.conv1_3.norm',
    'fc': 'linear'
}
D2_BLOCK = {
    'bn1': 'conv1.norm',
    'bn3': 'conv3.norm',
    'downsample.1': 'shortcut',
    'downsample.2': 'shortcut.norm'
}
# Every key of the first block of res2 (ResNeSt-50), written from that source.
D2_FIRST_BLOCK_KEYS = sorted([
    f'res2.0.{m}.weight' for m in ('conv1', 'conv2.conv', 'conv3', 'shortcut')
] + [
    f'res2.0.conv2.{m}.{p}' for m in ('fc1', 'fc2') for p in ('weight', 'bias')
] + [
    f'res2.0.{m}.{p}' for m in ('conv1.norm', 'conv2.bn0', 'conv2.bn1',
                                'conv3.norm', 'shortcut.norm')
    for p in ('weight', 'bias', 'running_mean', 'running_var')
])


def to_detectron2(state_dict):
    """The authors' torch keys -> their detectron2 keys (tables above)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith('num_batches_tracked'):
            continue  # detectron2's FrozenBatchNorm2d has none
        module, _, param = key.rpartition('.')
        match = re.match(r'layer(\d)\.(\d+)\.(.*)', module)
        if match:
            stage, index, inner = match.groups()
            module = (f'res{int(stage) + 1}.{index}.'
                      f'{D2_BLOCK.get(inner, inner)}')
        else:
            module = D2_STEM[module]
        out[f'{module}.{param}'] = value
    return out


def test_detectron2_keys_are_those_of_the_authors_source():
    d2 = to_detectron2(resnest.resnest50().state_dict())
    assert sorted(k for k in d2
                  if k.startswith('res2.0.')) == D2_FIRST_BLOCK_KEYS
    assert d2['res2.0.conv2.conv.weight'].shape == (128, 32, 3, 3)
    assert d2['stem.conv1_3.norm.weight'].shape == (64, )


@pytest.mark.parametrize('wrapped', ['imagenet', 'detector', 'backbone'])
def test_detectron2_layouts_load_to_the_authors_outputs(
        tmp_path, wrapped, authors14):
    """The authors' resnest*_detectron ImageNet files (their classifier
    under ``backbone.bottom_up.``), a detectron2-ResNeSt detector (inside
    ``model``, with FPN and heads) and a bare detectron2 backbone. Their
    detectron2 blocks compute what their torch blocks do at the strides of
    detection (splat.py is their SplAtConv2d; avd after conv2 where the
    stride is 2), so the reference is their torch network."""
    d2 = to_detectron2(authors14[0])
    if wrapped == 'backbone':
        d2 = {k: v for k, v in d2.items() if not k.startswith('linear.')}
        checkpoint, layout = d2, layout_name('', 'detectron2')
        dropped = []
    else:
        d2 = {f'backbone.bottom_up.{k}': v for k, v in d2.items()}
        dropped = [
            'backbone.bottom_up.linear.weight',
            'backbone.bottom_up.linear.bias'
        ]
        if wrapped == 'detector':
            d2.update({
                'backbone.fpn_lateral2.weight':
                torch.zeros(1),
                'roi_heads.box_predictor.cls_score.weight':
                torch.zeros(1)
            })
            dropped += [
                'backbone.fpn_lateral2.weight',
                'roi_heads.box_predictor.cls_score.weight'
            ]
            d2 = dict(model=d2, iteration=90000)
        checkpoint = d2
        layout = layout_name('backbone.bottom_up.', 'detectron2')
    path = tmp_path / 'resnest14_detectron.pth'
    torch.save(checkpoint, path)
    ours = ResNeSt(depth=14, stem_channels=64)
    report = load_pretrained(ours, path)
    assert report.layout == layout
    assert sorted(report.dropped) == sorted(dropped)
    assert report.missing == [] and report.unexpected == []
    assert_gives(ours, authors14)


def test_detectron2_dcn_offsets_map_to_ours_or_are_reported(tmp_path):
    """detectron2-ResNeSt's DCN block (resnet.py DeformBottleneckBlock) has
    ``conv2_offset``, a conv grouped by deformable group, where mmcv's
    ``conv_offset`` is dense: it loads as the dense conv that computes the
    same offsets (and masks: both chunk them as offset_x, offset_y, mask)."""
    dcn = dict(
        dcn=dict(type='DCNv2', deform_groups=2, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True))
    source = randomize_(ResNeSt(depth=14, stem_channels=64, **dcn))
    state_dict = {}
    grouped = {}
    for key, value in source.state_dict().items():
        if '.conv_offset.' in key:
            block = key.split('.conv2.')[0]
            if key.endswith('weight'):  # (27 * 2, C / 2, 3, 3), random
                value = torch.randn(value.shape[0], value.shape[1] // 2, 3,
                                    3) * 0.01
                grouped[block] = value
            key = f'{block}.conv2_offset.{key.rsplit(".", 1)[1]}'
        state_dict[key] = value
    d2 = {}
    for key, value in state_dict.items():  # ours -> detectron2
        key = re.sub(r'^layer(\d)', lambda m: f'res{int(m[1]) + 1}', key)
        block = re.match(r'(res\d\.\d+)\.(.*)\.(\w+)$', key)
        if block and block[2] in D2_BLOCK:
            key = f'{block[1]}.{D2_BLOCK[block[2]]}.{block[3]}'
        key = re.sub(
            r'^stem\.(\d)\.', lambda m: 'stem.conv1_{}.{}'.format(
                int(m[1]) // 3 + 1, 'norm.' if int(m[1]) % 3 else ''), key)
        d2[f'backbone.bottom_up.{key}'] = value
    assert 'backbone.bottom_up.res3.0.conv2_offset.weight' in d2
    path = tmp_path / 'd2_dcn.pth'
    torch.save(dict(model=d2), path)

    ours = ResNeSt(depth=14, stem_channels=64, **dcn)
    report = load_pretrained(ours, path)
    assert report.missing == [] and report.unexpected == []
    assert_holds(ours, {
        k: v
        for k, v in source.state_dict().items() if '.conv_offset.' not in k
    })
    for block, weight in grouped.items():
        offset_conv = ours.get_submodule(block).conv2.conv.conv_offset
        x = torch.randn(1, offset_conv.in_channels, 8, 8)
        expected = torch.nn.functional.conv2d(
            x,
            weight,
            offset_conv.bias,
            offset_conv.stride,
            offset_conv.padding,
            offset_conv.dilation,
            groups=2)
        assert rel_err(offset_conv(x), expected) <= 1e-6

    plain = load_pretrained(ResNeSt(depth=14, stem_channels=64), path)
    assert len(plain.unexpected) == 6 and all('.conv2.conv.conv_offset.' in k
                                              for k in plain.unexpected)


@pytest.mark.parametrize('layout', [('', 'authors'),
                                    ('backbone.bottom_up.', 'detectron2')])
def test_safetensors_files_load_in_their_layout(tmp_path, layout, authors14):
    """timm's and other hubs' weights ship as .safetensors: a flat state
    dict in any accepted layout."""
    state_dict = authors14[0]
    if layout[1] == 'detectron2':
        state_dict = {
            f'backbone.bottom_up.{k}': v
            for k, v in to_detectron2(state_dict).items()
        }
    path = tmp_path / 'model.safetensors'
    safetensors.torch.save_file(state_dict, str(path))
    ours = ResNeSt(depth=14, stem_channels=64)
    report = load_pretrained(ours, path)
    assert report.layout == layout_name(*layout)
    assert report.missing == [] and report.unexpected == []
    assert_gives(ours, authors14)


def test_safetensors_without_the_package_or_damaged_says_so(
        resnest14_file, tmp_path, monkeypatch):
    state_dict, _ = resnest14_file
    path = tmp_path / 'resnest14.safetensors'
    safetensors.torch.save_file(state_dict, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(
            CorruptCheckpointError,
            match='is not a readable .safetensors file'):
        load_pretrained(ResNeSt(depth=14, stem_channels=64), path)
    monkeypatch.setitem(sys.modules, 'safetensors.torch', None)
    with pytest.raises(ImportError, match='pip install safetensors'):
        load_pretrained(ResNeSt(depth=14, stem_channels=64), path)


def test_convert_weights_tool_reads_a_detectron2_safetensors_file(
        tmp_path, authors14):
    src, dst = tmp_path / 'resnest14_detectron.safetensors', tmp_path / 'o.pth'
    safetensors.torch.save_file(
        {
            f'backbone.bottom_up.{k}': v
            for k, v in to_detectron2(authors14[0]).items()
        }, str(src))
    out = run(tool('convert_weights.py') + [str(src), str(dst), '--verify'])
    layout = layout_name('backbone.bottom_up.', 'detectron2')
    assert f'layout:     {layout}\n' in out
    assert 'verify:     skipped, no independent implementation' in out
    ours = ResNeSt(depth=14, stem_channels=64)
    ours.load_state_dict(torch.load(dst, weights_only=True))  # strict
    assert_gives(ours, authors14)
