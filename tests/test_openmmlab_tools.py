"""mmdet's and mmseg's own tools/train.py and tools/test.py on our configs.

The copies the installed packages ship under ``.mim/tools/`` (what ``mim
train`` and ``mim test`` run) train our demo configs on tiny generated data,
shrunk with ``--cfg-options`` as a user would; each run is killed after its
first checkpoint and resumed with ``--resume``, and the last checkpoint is
evaluated with the package's test.py.
"""
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from resnest_tools.demo_data import make_ade20k_scenes, make_coco_shapes
from helpers import checkpoint_saved, kill_when, run

DET_CONFIG = 'configs/detection/demo/faster-rcnn_s14_fpn_1x_demo-shapes.py'
SEG_CONFIG = ('configs/segmentation/demo/'
              'resnest_s14-d8_deeplabv3_1xb4-200_ade20k-demo-64x64.py')


def upstream_tool(package, name):
    """The command line of ``<package>/.mim/tools/<name>``: the package's."""
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]) / '.mim' / 'tools' / name
    assert path.is_file(), f'{package} ships no {path}'
    return [sys.executable, str(path)]


def data_options(data_root, extra=()):
    """``--cfg-options`` for tiny runs: data root, no workers, every log."""
    options = [
        'default_hooks.logger.interval=1', 'randomness.seed=0',
        'train_dataloader.batch_size=2', *extra
    ]
    for split in ('train', 'val', 'test'):
        options += [
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.persistent_workers=False',
            f'{split}_dataloader.dataset.data_root={data_root}'
        ]
    return options


def detection(tmp):
    """mmdet, our detection demo, 4 COCO-layout images: 2 epochs of 2 steps."""
    make_coco_shapes(tmp / 'coco', num_train=4, num_val=2, image_size=(64, 64))
    root = f'{tmp}/coco/'
    ann = f'{root}annotations/instances_val2017.json'
    return 'mmdet', DET_CONFIG, 4, data_options(root, [
        'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=1', 'val_dataloader.batch_size=2',
        'test_dataloader.batch_size=2', f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}'
    ])


def segmentation(tmp):
    """mmseg, our ADE20K demo, 4 generated images: 6 steps, saved every 2."""
    make_ade20k_scenes(
        tmp / 'ade', num_train=4, num_val=2, image_size=(64, 64))
    return 'mmseg', SEG_CONFIG, 6, data_options(
        tmp / 'ade' / 'ADEChallengeData2016', [
            'train_cfg.max_iters=6', 'train_cfg.val_interval=6',
            'default_hooks.checkpoint.interval=2'
        ])


def train_steps(run_dir):
    """The training steps one run (one timestamped folder) logged."""
    with open(run_dir / 'vis_data' / 'scalars.json') as f:
        records = [json.loads(line) for line in f]
    return [r['step'] for r in records if 'loss' in r]


@pytest.fixture(
    scope='module', params=[detection, segmentation], ids=['mmdet', 'mmseg'])
def resumed(request, tmp_path_factory):
    """A run of the package's train.py, killed and resumed to the end.

    Killed once its first checkpoint is saved. Returns the package, config,
    options, work dir, steps, the checkpoint it resumed from and the log of
    the resumed run.
    """
    tmp = tmp_path_factory.mktemp(request.param.__name__)
    package, config, steps, options = request.param(tmp)
    work = tmp / 'work'
    train = upstream_tool(package, 'train.py') + [
        config, '--work-dir', str(work)
    ]
    kill_when(train + ['--cfg-options', *options],
              lambda: checkpoint_saved(work), tmp / 'killed.log')
    saved = checkpoint_saved(work)  # what --resume finds, read after the kill
    log = run(train + ['--resume', '--cfg-options', *options])
    return SimpleNamespace(
        package=package,
        config=config,
        options=options,
        work=work,
        steps=steps,
        saved=saved,
        log=log)


def test_killed_run_resumes_where_it_stopped(resumed):
    r = resumed
    done = torch.load(r.saved, weights_only=True)['meta']['iter']
    assert 0 < done < r.steps, (r.saved, done)  # killed mid-run
    assert f'Auto resumed from the latest checkpoint {r.saved}' in r.log
    assert re.search(rf'resumed epoch: \d+, iter: {done}\b', r.log)
    killed, again = sorted(p for p in r.work.iterdir() if p.is_dir())
    assert train_steps(killed)[0] == 1
    # the resumed run logs the steps after the checkpoint, no restart from 1
    assert train_steps(again) == list(range(done + 1, r.steps + 1))
    final = torch.load(checkpoint_saved(r.work), weights_only=True)['meta']
    assert final['iter'] == r.steps


def test_the_backbone_is_ours(resumed):
    """Our demo configs use depth 14, which upstream's ResNeSt refuses.

    Upstream's ``ResNeSt`` (mmdet's and mmseg's) builds only depths 50, 101,
    152 and 200 and raises ``KeyError`` for 14 (checked here, so that this
    proof notices if upstream ever adds it). The checkpoint the package's
    tool trained holds a ResNeSt with one block per stage, i.e. depth 14:
    only our class, registered through the config's ``custom_imports``, can
    have built it.
    """
    module = f'{resumed.package}.models.backbones.resnest'
    with pytest.raises(KeyError, match='invalid depth 14'):
        importlib.import_module(module).ResNeSt(depth=14)
    state = torch.load(
        checkpoint_saved(resumed.work), weights_only=True)['state_dict']
    blocks = {
        '.'.join(key.split('.')[1:3])
        for key in state if key.startswith('backbone.layer')
    }
    assert blocks == {f'layer{i}.0' for i in range(1, 5)}
    assert 'backbone.layer4.0.conv2.fc2.weight' in state  # split attention


def test_test_tool_reports_metrics(resumed, tmp_path):
    r = resumed
    test = upstream_tool(r.package, 'test.py')
    out = run(test + [
        r.config,
        checkpoint_saved(r.work), '--work-dir',
        str(tmp_path), '--cfg-options', *r.options
    ])
    detection = r.package == 'mmdet'
    metric = 'coco/bbox_mAP' if detection else 'mIoU'
    value = re.search(rf'{metric}: (-?[\d.]+)', out)
    assert value, out[-3000:]
    assert 0 <= float(value.group(1)) <= (1 if detection else 100)
    if detection:
        assert 'coco/bbox_mAP_50:' in out
