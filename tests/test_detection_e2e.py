"""tools/train.py and tools/test.py end to end on tiny generated COCO data.

Each tool runs as a user runs it, in its own process. One training run is
killed after its first checkpoint and resumed; a 2-process torchrun run is
compared with it.
"""
import json
import os
import pickle
import re
import sys
import zipfile

import pytest

from resnest_tools.demo_data import make_coco_panoptic_shapes, make_coco_shapes
from resnest_tools.run_logs import read_scalars
from resnest_tools.runner_setup import latest_checkpoint
from helpers import (DETECTION_DEMO, ROOT, flip_tta_of_mirror_image, free_port,
                     kill_when, run, run_unchecked, served,
                     tiny_detection_config, tool)

FINE_TUNING = DETECTION_DEMO.with_name(
    'faster-rcnn_s14_fpn_ft-2e_demo-shapes-2cls.py')
ITERS_PER_EPOCH = 4  # 8 training images, batch 2


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_coco_shapes(root, num_train=8, num_val=4, image_size=(64, 64))
    return root


def last_epoch_loss(work_dir):
    train, _ = read_scalars(work_dir)
    return sum(r['loss']
               for r in train[-ITERS_PER_EPOCH:]) / ITERS_PER_EPOCH, train


@pytest.fixture(scope='module')
def resumed_run(tmp_path_factory, data_root):
    """Train 3 epochs, killed after the first checkpoint and resumed.

    Returns (config, work dir, logs).
    """
    tmp = tmp_path_factory.mktemp('train')
    cfg, work = tiny_detection_config(tmp, data_root), tmp / 'work'
    kill_when(
        tool('train.py') + [cfg, '--work-dir', str(work)],
        lambda: zipfile.is_zipfile(work / 'epoch_1.pth'), tmp / 'first.log')
    assert not (
        work / 'epoch_3.pth').exists(), 'the run finished before it was killed'
    resumed = run(
        tool('train.py') +
        [cfg, '--work-dir', str(work), '--resume'])
    return cfg, work, resumed


def test_resume_skips_a_checkpoint_truncated_by_a_kill(tmp_path):
    import torch
    torch.save({'meta': {'epoch': 1}}, tmp_path / 'epoch_1.pth')
    torch.save({'meta': {'epoch': 2}}, tmp_path / 'epoch_2.pth')
    data = (tmp_path / 'epoch_2.pth').read_bytes()
    (tmp_path / 'epoch_3.pth').write_bytes(data[:len(data) //
                                                2])  # killed while saving
    assert latest_checkpoint(tmp_path) == str(tmp_path / 'epoch_2.pth')
    assert latest_checkpoint(tmp_path / 'missing') is None


def test_killed_run_resumes_and_continues_counting(resumed_run):
    _, work, log = resumed_run
    assert 'resumed epoch: ' in log
    train, _ = read_scalars(work)
    steps = [r['step'] for r in train]
    assert steps == list(range(1, 3 * ITERS_PER_EPOCH +
                               1)), steps  # no gap, no restart
    assert (work / 'epoch_3.pth').exists()
    import torch
    ckpt = torch.load(
        work / 'epoch_3.pth', weights_only=True)  # the safe loader admits it
    assert ckpt['meta']['iter'] == 3 * ITERS_PER_EPOCH and ckpt['meta'][
        'epoch'] == 3


def test_test_tool_gives_coco_metrics_predictions_and_pictures(
        resumed_run, tmp_path):
    """The checkpoint given by URL, as a model zoo's: downloaded into the
    torch hub cache, then evaluated."""
    cfg, work, _ = resumed_run
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch'))
    with served(work) as url:
        out = run(
            tool('test.py') + [
                cfg, f'{url}/epoch_3.pth', '--work-dir',
                str(tmp_path), '--out',
                str(tmp_path / 'preds.pkl'), '--show-dir', 'vis'
            ],
            env=env)
    cached = tmp_path / 'torch/hub/checkpoints/epoch_3.pth'
    assert cached.read_bytes() == (work / 'epoch_3.pth').read_bytes()
    assert 'coco/bbox_mAP:' in out and 'coco/bbox_mAP_50:' in out
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 4 and 'bboxes' in preds[0]['pred_instances']
    assert len(list(tmp_path.glob('*/vis/*.jpg'))) == 4


def test_test_tool_offline_names_the_url_and_where_to_put_the_file(tmp_path):
    url = f'http://127.0.0.1:{free_port()}/zoo/epoch_12.pth'  # refused
    proc = run_unchecked(
        tool('test.py') + [str(DETECTION_DEMO), url],
        env=dict(os.environ, TORCH_HOME=str(tmp_path)),
        timeout=300)
    assert proc.returncode != 0
    assert f'could not download {url}' in proc.stderr
    assert (f'put it at {tmp_path / "hub/checkpoints/epoch_12.pth"} '
            '(the torch hub cache' in proc.stderr)


def test_plot_curves(resumed_run):
    _, work, _ = resumed_run
    out = run(tool('plot_curves.py') + [str(work)])
    assert (work / 'curves.png').stat().st_size > 10_000
    assert 'coco/bbox_mAP=' in out


def test_mask_rcnn_end_to_end(tmp_path, data_root):
    """The real Mask R-CNN recipe, shrunk like the demo: trains and reports
    mask AP."""
    base = (
        ROOT / 'configs/detection/'
        'mask-rcnn_s50_fpn_syncbn-backbone+head_ms-1x_coco.py')
    extra = '''
classes = ('circle', 'square', 'triangle')
model = dict(
    backbone=dict(depth=14, frozen_stages=-1, init_cfg=None),
    roi_head=dict(
        bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(max_per_img=100), rcnn=dict(sampler=dict(num=32))))
resize = dict(type='Resize', scale=(64, 64), keep_ratio=True)
'''
    load = ("dict(type='LoadImageFromFile'), "
            "dict(type='LoadAnnotations', with_bbox=True, with_mask=True)")
    dataset = (f'metainfo=dict(classes=classes), '
               f"pipeline=[{load}, resize, dict(type='PackDetInputs')]")
    cfg = tiny_detection_config(
        tmp_path,
        data_root,
        base=base,
        epochs=1,
        extra=extra,
        train_dataset=dataset,
        val_dataset=dataset,
        evaluator="metric=['bbox', 'segm']")
    out = run(tool('train.py') + [cfg, '--work-dir', str(tmp_path / 'work')])
    assert 'coco/segm_mAP:' in out
    out = run(
        tool('test.py') + [
            cfg,
            str(tmp_path / 'work/epoch_1.pth'), '--work-dir',
            str(tmp_path / 'work')
        ])
    assert 'coco/segm_mAP:' in out and 'coco/bbox_mAP:' in out


@pytest.mark.parametrize('name', [
    'retinanet_s50_fpn_syncbn-backbone_1x_coco.py',
    'fcos_s50_fpn_syncbn-backbone_gn-head_1x_coco.py'
])
def test_one_stage_detector_end_to_end(tmp_path, data_root, name):
    """The RetinaNet and FCOS recipes, shrunk like the demo: train and report
    box AP."""
    extra = '''
classes = ('circle', 'square', 'triangle')
model = dict(
    backbone=dict(depth=14, frozen_stages=-1, init_cfg=None),
    bbox_head=dict(num_classes=3),
    test_cfg=dict(score_thr=0.0))  # 2 iterations: every score is low
'''
    dataset = ('metainfo=dict(classes=classes), '
               "pipeline=[dict(type='LoadImageFromFile'), "
               "dict(type='LoadAnnotations', with_bbox=True), "
               "dict(type='Resize', scale=(64, 64), keep_ratio=True), "
               "dict(type='PackDetInputs')]")
    cfg = tiny_detection_config(
        tmp_path,
        data_root,
        base=ROOT / 'configs/detection' / name,
        epochs=1,
        extra=extra,
        train_dataset=dataset + ', indices=2',  # speed: 1 iteration
        val_dataset=dataset)
    out = run(tool('train.py') + [cfg, '--work-dir', str(tmp_path / 'work')])
    assert 'coco/bbox_mAP:' in out and 'coco/bbox_mAP_50:' in out


@pytest.fixture(scope='module')
def panoptic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco_panoptic')
    make_coco_panoptic_shapes(
        root, num_train=2, num_val=2, image_size=(64, 64))
    return root


PANOPTIC = '''
classes = ('circle', 'square', 'triangle', 'background')
metainfo = dict(
    classes=classes, thing_classes=classes[:3], stuff_classes=classes[3:])
model = dict(
    backbone=dict(depth=14, frozen_stages=-1, init_cfg=None),
    roi_head=dict(
        bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    semantic_head=dict(num_things_classes=3, num_stuff_classes=1),
    panoptic_fusion_head=dict(num_things_classes=3, num_stuff_classes=1),
    train_cfg=dict(
        rpn_proposal=dict(max_per_img=32), rcnn=dict(sampler=dict(num=8))),
    # a 64 px image has 4096 pixels: keep stuff segments of 64 or more
    test_cfg=dict(panoptic=dict(stuff_area_limit=64)))
# 2 batches from a 1-batch dataset: the hook goes round the data again
custom_hooks = [dict(type='PreciseBNHook', num_iters=2)]
'''


def test_panoptic_fpn_trains_resumes_and_reports_pq(tmp_path, panoptic_root):
    """The Panoptic FPN recipe, shrunk like the demo, on the demo data in
    COCO's panoptic layout: killed after its first checkpoint, resumed,
    precise BN at the end, then PQ."""
    dataset = ('metainfo=metainfo, '
               "pipeline=[dict(type='LoadImageFromFile'), "
               "dict(type='LoadPanopticAnnotations'), "
               "dict(type='Resize', scale=(64, 64), keep_ratio=True), "
               "dict(type='PackDetInputs')]")
    cfg = tiny_detection_config(
        tmp_path,
        panoptic_root,
        base=ROOT / 'configs/detection/'
        'panoptic-fpn_s50_fpn_syncbn-backbone+head_ms-3x_coco.py',
        epochs=2,
        extra=PANOPTIC,
        train_dataset=dataset,
        val_dataset=dataset,
        evaluator="seg_prefix=data_root + 'annotations/panoptic_val2017/'",
        annotations='panoptic')
    work = tmp_path / 'work'
    kill_when(
        tool('train.py') + [cfg, '--work-dir', str(work)],
        lambda: zipfile.is_zipfile(work / 'epoch_1.pth'),
        tmp_path / 'first.log')
    assert not (work / 'epoch_2.pth').exists()
    out = run(tool('train.py') + [cfg, '--work-dir', str(work), '--resume'])
    assert 'resumed epoch: ' in out
    updated = re.search(r'PreciseBN: updated (\d+) BatchNorm layers', out)
    assert updated and int(updated.group(1)) > 0
    assert 'coco_panoptic/PQ:' in out and 'coco_panoptic/PQ_st:' in out
    train, _ = read_scalars(work)
    assert [r['step'] for r in train] == [1, 2]  # 2 images, batch 2


def test_two_process_torchrun_on_cpu(tmp_path, data_root, resumed_run):
    """2 processes x batch 1 on gloo, against the 1 process x batch 2 run:
    same total batch."""
    cfg = tiny_detection_config(tmp_path, data_root, batch=1)
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
    out = run([
        'bash',
        str(ROOT / 'tools/dist_train.sh'), cfg, '2', '--work-dir',
        str(work)
    ],
              env=env)
    assert 'distributed on gloo over 2 processes' in out
    assert sorted(p.name for p in work.glob('*.pth')) == [
        'epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'
    ]  # written once, by rank 0
    dist_loss, dist_train = last_epoch_loss(work)
    single_loss, single_train = last_epoch_loss(resumed_run[1])
    assert len(dist_train) == len(single_train) == 3 * ITERS_PER_EPOCH
    for train in (dist_train, single_train):
        assert sum(r['loss'] for r in train[-ITERS_PER_EPOCH:]) < sum(
            r['loss'] for r in train[:ITERS_PER_EPOCH])  # both learn
    assert 0.65 < dist_loss / single_loss < 1.5


def test_compile_flag_compiles_the_train_step(tmp_path, data_root):
    """``--compile`` reaches mmengine's ``cfg.compile``: the runner compiles
    the train step.

    Killed before the first iteration: compiling a detector takes minutes on
    a CPU (tools/benchmark.py --compile measures what it gains).
    """
    log = tmp_path / 'train.log'
    kill_when(
        tool('train.py') + [
            tiny_detection_config(tmp_path, data_root), '--compile',
            '--work-dir',
            str(tmp_path / 'work')
        ], lambda: 'Model has been "compiled"' in log.read_text(), log)
    assert 'compile = True' in log.read_text()  # the config the run logs


def test_one_image_inference_demo(resumed_run, data_root, tmp_path):
    """The trained run's checkpoint through mmdet's DetInferencer: a painted
    image of the input's size and its predictions as JSON."""
    cfg, work, _ = resumed_run
    image = data_root / 'val2017' / '000000000001.jpg'
    run(
        tool('infer_demo.py') + [
            cfg,
            str(work / 'epoch_3.pth'),
            str(image), '--out-dir',
            str(tmp_path / 'out'), '--score-thr', '0'
        ])
    from PIL import Image
    assert Image.open(tmp_path / 'out/vis' / image.name).size == (64, 64)
    preds = json.loads(
        (tmp_path / 'out/preds' / f'{image.stem}.json').read_text())
    assert len(preds['labels']) == len(preds['scores']) == len(
        preds['bboxes']) > 0


@pytest.mark.parametrize('mutate,message', [
    (lambda root: (root / 'annotations/instances_val2017.json').unlink(),
     'annotation file not found'),
    (lambda root: (root / 'annotations/instances_train2017.json').write_text(
        '{"images": [}'), 'is not valid JSON'),
    (lambda root: (root / 'annotations/instances_train2017.json').write_text(
        '{"images": []}'), 'is not a COCO annotation file'),
    (lambda root:
     (root / 'train2017/000000000001.jpg').unlink(), 'are not in'),
])
def test_bad_dataset_fails_before_any_model_is_built(tmp_path, mutate,
                                                     message):
    root = tmp_path / 'coco'
    make_coco_shapes(root, num_train=2, num_val=1, image_size=(64, 64))
    mutate(root)
    proc = run_unchecked(
        tool('train.py') + [tiny_detection_config(tmp_path, root)],
        timeout=300)
    assert proc.returncode != 0
    assert 'DatasetError' in proc.stderr and message in proc.stderr
    assert 'Epoch(train)' not in proc.stdout + proc.stderr


def test_missing_config_is_named():
    proc = run_unchecked(
        tool('train.py') + ['configs/detection/nope.py'], timeout=300)
    missing = "config file not found: 'configs/detection/nope.py'"
    assert proc.returncode != 0 and missing in proc.stderr


def test_tta_names_its_views_and_reports_the_augmented_ap(
        resumed_run, tmp_path):
    cfg, work, _ = resumed_run
    out = run(
        tool('test.py') + [
            cfg,
            str(work / 'epoch_3.pth'),
            '--work-dir',
            str(tmp_path),
            '--tta',
            '--cfg-options',
            'test_dataloader.dataset.indices=1'  # 1 image x 6 views
        ])
    assert ('--tta: DetTTAModel merges 6 views per image: scales '
            '((128, 128), (64, 64), (192, 192)) x flips (horizontal, none)'
            in out)
    assert 'coco/bbox_mAP:' in out and 'coco/bbox_mAP_50:' in out


def test_flip_tta_of_a_mirror_image_is_plain_testing_and_its_mirror(
        resumed_run, data_root, tmp_path):
    """Flipped, a left-right symmetric image is the same image: flip-only TTA
    must give the boxes of plain testing merged with their mirror images
    (the config's NMS), in the views' order.

    Not the plain boxes alone: the network is not exactly flip-equivariant
    (its stride-2 sampling grids start at the left edge), so plain testing of
    a symmetric image does not give symmetric boxes.
    """
    import numpy as np
    import torch
    from mmcv.ops import batched_nms
    from mmengine.config import Config
    from PIL import Image

    cfg, work, _ = resumed_run
    image = np.asarray(Image.open(data_root / 'val2017/000000000001.jpg'))
    width, plain, merged, flipped = flip_tta_of_mirror_image(
        cfg,
        work / 'epoch_3.pth',
        image.repeat(2, 0).repeat(2, 1),  # 128 px, the demo's test scale
        tmp_path)
    boxes = plain.pred_instances.bboxes
    assert len(boxes) > 0
    mirrored = torch.stack(
        [width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]],
        1)
    tta_cfg = Config.fromfile(cfg).tta_model.tta_cfg
    expected, keep = batched_nms(
        torch.cat([mirrored if f else boxes for f in flipped]),
        plain.pred_instances.scores.repeat(len(flipped)),
        plain.pred_instances.labels.repeat(len(flipped)), tta_cfg.nms)
    expected = expected[:tta_cfg.max_per_img]
    torch.testing.assert_close(merged.pred_instances.bboxes, expected[:, :4])
    torch.testing.assert_close(merged.pred_instances.scores, expected[:, 4])
    assert torch.equal(
        merged.pred_instances.labels,
        plain.pred_instances.labels.repeat(len(flipped))[keep][:len(expected)])


def test_fine_tuning_on_a_subset_of_the_classes(resumed_run, data_root,
                                                tmp_path):
    """The demo detector, fine-tuned on two of its three classes: the box
    head's classifier and regressor are re-initialised and listed, the rest
    is loaded, and after one epoch it finds the two classes."""
    _, work, _ = resumed_run
    cfg = tiny_detection_config(
        tmp_path, data_root, base=FINE_TUNING, epochs=1)
    checkpoint = work / 'epoch_3.pth'
    out = run(
        tool('train.py') + [
            cfg, '--work-dir',
            str(tmp_path / 'work'), '--cfg-options', f'load_from={checkpoint}'
        ])
    reinitialised = (
        're-initialised, shape differs from the checkpoint: 4 ('
        'roi_head.bbox_head.fc_cls.weight (4, 1024) -> (3, 1024), '
        'roi_head.bbox_head.fc_cls.bias (4,) -> (3,), '
        'roi_head.bbox_head.fc_reg.weight (12, 1024) -> (8, 1024), '
        'roi_head.bbox_head.fc_reg.bias (12,) -> (8,))')
    assert reinitialised in out
    assert ('not in the checkpoint: none; unused from the checkpoint: none'
            in out)
    _, val = read_scalars(tmp_path / 'work')
    assert val[-1]['coco/bbox_mAP'] > 0
