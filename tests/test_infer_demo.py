"""tools/infer_demo.py (mmdet's and mmseg's inferencers on our configs) and
tools/test.py --fuse-conv-bn, on the demo configs and tiny generated data.

The checkpoints are the demo models with random BatchNorm statistics and
affine parameters, saved as the Runner saves them (``state_dict`` and the
dataset's ``meta``): a trained network's BatchNorms are far from the
identity, so folding them changes the convolutions' numbers for real.
"""
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from resnest_tools.demo_data import make_ade20k_scenes, make_coco_shapes
from resnest_tools.runner_setup import build_model, load_config
from helpers import (ROOT, TINY_SEGMENTATION, randomize_, run, run_unchecked,
                     tiny_detection_config, tool)

SEG_DEMO = ROOT / ('configs/segmentation/demo/'
                   'resnest_s14-d8_deeplabv3_1xb4-200_ade20k-demo-64x64.py')


def tiny_config(task, tmp):
    """A demo config on 2 generated 64x64 val images; returns (config,
    folder of the images)."""
    if task == 'detection':
        make_coco_shapes(
            tmp / 'coco', num_train=1, num_val=2, image_size=(64, 64))
        return tiny_detection_config(tmp, tmp / 'coco'), tmp / 'coco/val2017'
    make_ade20k_scenes(
        tmp / 'ade', num_train=1, num_val=2, image_size=(64, 64))
    root = tmp / 'ade/ADEChallengeData2016'
    cfg = tmp / 'tiny_seg.py'
    cfg.write_text(TINY_SEGMENTATION.format(base=SEG_DEMO, data_root=root))
    return str(cfg), root / 'images/validation'


@pytest.fixture(scope='module', params=['detection', 'segmentation'])
def demo(request, tmp_path_factory):
    """(task, config, checkpoint, image folder, the model in eval mode)."""
    from mmengine.registry import DATASETS

    task, tmp = request.param, tmp_path_factory.mktemp(request.param)
    config, images = tiny_config(task, tmp)
    cfg = load_config(config)
    model = randomize_(build_model(cfg), norms_only=True, calibrate_on=None)
    model.cfg = cfg  # what mmdet's and mmseg's inference functions read
    meta = DATASETS.build(dict(cfg.test_dataloader.dataset,
                               lazy_init=True)).metainfo
    checkpoint = tmp / 'model.pth'
    torch.save(
        dict(state_dict=model.state_dict(), meta=dict(dataset_meta=meta)),
        checkpoint)
    return task, config, str(checkpoint), images, model.eval()


def expected_prediction(task, model, image):
    """The model's own prediction, through mmdet's or mmseg's inference
    function (not the inferencers)."""
    if task == 'detection':
        from mmdet.apis import inference_detector
        return inference_detector(model, str(image)).pred_instances
    from mmseg.apis import inference_model
    return inference_model(model, str(image)).pred_sem_seg.data[0]


def test_inferencer_paints_and_saves_the_models_predictions(demo, tmp_path):
    task, config, checkpoint, images, model = demo
    log = run(
        tool('infer_demo.py') +
        [config, checkpoint,
         str(images), '--out-dir',
         str(tmp_path)])
    names = sorted(p.name for p in images.iterdir())
    assert len(names) == 2 and '2 images: vis/' in log
    for i, name in enumerate(names):
        painted = Image.open(tmp_path / 'vis' / name)
        assert painted.size == Image.open(images / name).size
        expected = expected_prediction(task, model, images / name)
        if task == 'detection':
            with open(tmp_path / 'preds' / (name[:-4] + '.json')) as f:
                got = json.load(f)
            assert len(got['labels']) > 0
            assert got['labels'] == expected.labels.tolist()
            np.testing.assert_allclose(
                got['scores'], expected.scores, rtol=1e-5)
            np.testing.assert_allclose(
                got['bboxes'], expected.bboxes, atol=1e-3)
        else:
            label_map = np.asarray(
                Image.open(tmp_path / 'pred' / f'{i:08d}_pred.png'))
            assert len(np.unique(label_map)) > 1  # not a trivial answer
            np.testing.assert_array_equal(label_map, expected.numpy())


@pytest.mark.parametrize(
    'arguments, message',
    [(['CHECKPOINT', 'missing.jpg'], 'image or folder not found: missing'),
     (['missing.pth', 'IMAGES'], 'checkpoint not found: missing.pth'),
     (['CHECKPOINT', 'IMAGES', '--score-thr', '0.5'], 'is for detection')],
    ids=['image', 'checkpoint', 'score-threshold-of-a-segmentor'])
def test_infer_demo_refuses_what_it_cannot_run(demo, arguments, message):
    task, config, checkpoint, images, _ = demo
    if message == 'is for detection' and task == 'detection':
        pytest.skip('a detector takes --score-thr')
    replace = dict(CHECKPOINT=checkpoint, IMAGES=str(images))
    proc = run_unchecked(
        tool('infer_demo.py') + [config] +
        [replace.get(a, a) for a in arguments])
    assert proc.returncode != 0 and message in proc.stderr


def test_fuse_conv_bn_predicts_as_the_unfused_model(demo, tmp_path):
    """tools/test.py --fuse-conv-bn: every BatchNorm folded, the same
    predictions up to float rounding."""
    task, config, checkpoint, _, _ = demo
    outputs = {}
    for fused in (False, True):
        out = tmp_path / (f'fused{fused}' +
                          ('.pkl' if task == 'detection' else ''))
        log = run(
            tool('test.py') + [
                config, checkpoint, '--work-dir',
                str(tmp_path), '--out',
                str(out)
            ] + (['--fuse-conv-bn'] if fused else []))
        assert ('BatchNorms folded' in log) == fused
        outputs[fused] = out
    if task == 'detection':
        plain, fused = (
            pickle.loads(outputs[f].read_bytes()) for f in (False, True))
        for a, b in zip(plain, fused):
            a, b = a['pred_instances'], b['pred_instances']
            assert len(a['labels']) > 0
            assert torch.equal(a['labels'], b['labels'])
            torch.testing.assert_close(
                a['scores'], b['scores'], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(
                a['bboxes'], b['bboxes'], rtol=0, atol=1e-2)
    else:
        maps = [sorted(outputs[f].rglob('*.png')) for f in (False, True)]
        assert len(maps[0]) == 2
        for a, b in zip(*maps):
            np.testing.assert_array_equal(
                np.asarray(Image.open(a)), np.asarray(Image.open(b)))
