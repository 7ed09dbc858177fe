"""Whole detectors and segmentors through mmdeploy 1.3.1 to ONNX Runtime
(tools/deploy.py), on the frozen official stack with mmdeploy
(tests/stacks.py's ``frozen-deploy``).

A Faster R-CNN S-50, a RetinaNet S-50 and a DeepLabV3 S-50 train a few
iterations on tiny generated data, then tools/deploy.py exports each (opset 11,
dynamic shapes) and compares ONNX Runtime with PyTorch on an image. The
segmentor's graph is also run by plain onnxruntime (no mmdeploy, in this
process: a newer torch and onnxruntime) at another batch and size, against
PyTorch's logits; the graphs hold only standard ONNX ops.

Marked ``stacks``: ``make test-stacks`` runs them. The venv's build takes 1.5
to 3.5 minutes once mmcv's wheel is cached (tests/stacks.py), the rest about
as long. The tests of bad input need no stack.
"""
import re
import runpy
import shutil
import sys

import onnx
import onnxruntime
import pytest
import torch
from stacks import (FROZEN_DEPLOY, build, copy_checkout, find_python,
                    install_checkout)
from test_stacks import StackRun

from resnest_tools.demo_data import make_ade20k_scenes, make_coco_shapes
from helpers import (ROOT, TINY_SEGMENTATION, images, rel_err, run_unchecked,
                     tiny_detection_config, tool)

pytestmark = pytest.mark.stacks

CLASSES = "classes = ('circle', 'square', 'triangle')\n"
#: RetinaNet's recipe on the demo shapes at the demo's 128 px; after 2
#: iterations every score is near the focal loss's prior (0.01)
RETINANET = CLASSES + '''
model = dict(
    backbone=dict(frozen_stages=-1, init_cfg=None),
    bbox_head=dict(num_classes=3),
    test_cfg=dict(score_thr=0.0))
test_pipeline = [  # mmdeploy reads the top-level test_pipeline
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs')
]
'''
RETINANET_DATA = 'metainfo=dict(classes=classes), pipeline=test_pipeline'
S50 = 'model = dict(backbone=dict(depth=50))\n'  # the demos are S-14


@pytest.fixture(scope='module')
def stack(tmp_path_factory):
    """The frozen stack with mmdeploy, a copy of the checkout installed."""
    if find_python(FROZEN_DEPLOY.python) is None:
        pytest.skip(f'the frozen stack needs Python {FROZEN_DEPLOY.python}, '
                    'which is not installed')
    tmp = tmp_path_factory.mktemp(FROZEN_DEPLOY.name)
    source = copy_checkout(tmp / 'resnest-mm')
    venv = build(FROZEN_DEPLOY, tmp / 'venv')
    install_checkout(venv, source)
    yield StackRun(FROZEN_DEPLOY.name, venv, source, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def _configs(stack):
    """Each model's tiny training config, its checkpoint's name, and the
    image to deploy on."""
    tmp, configs = stack.tmp, stack.source / 'configs'
    coco, ade = tmp / 'coco', tmp / 'ade' / 'ADEChallengeData2016'
    make_coco_shapes(coco, num_train=4, num_val=2, image_size=(64, 64))
    make_ade20k_scenes(
        tmp / 'ade', num_train=4, num_val=2, image_size=(64, 64))
    # larger than the network's input, at another ratio: the label maps
    # are resized up, mmdeploy's by nearest neighbour
    make_ade20k_scenes(
        tmp / 'big', num_train=1, num_val=1, image_size=(300, 200))
    seg = tmp / 'tiny_deeplabv3.py'
    seg.write_text(
        TINY_SEGMENTATION.format(
            base=next(configs.glob('segmentation/demo/*_ade20k-demo-*.py')),
            data_root=ade) + S50 + 'train_cfg = dict(max_iters=2)\n')
    coco_image = str(coco / 'val2017' / '000000000001.jpg')
    return {
        'faster-rcnn': (tiny_detection_config(
            tmp,
            coco,
            base=configs /
            'detection/demo/faster-rcnn_s14_fpn_1x_demo-shapes.py',
            epochs=1,
            extra=S50), 'epoch_1.pth', coco_image),
        'retinanet': (tiny_detection_config(
            tmp,
            coco,
            base=configs /
            'detection/retinanet_s50_fpn_syncbn-backbone_1x_coco.py',
            epochs=1,
            extra=RETINANET,
            train_dataset=RETINANET_DATA,
            val_dataset=RETINANET_DATA), 'epoch_1.pth', coco_image),
        'deeplabv3': (str(seg), 'iter_2.pth',
                      str(next((tmp / 'big').glob('**/validation/*.jpg')))),
    }


@pytest.fixture(scope='module')
def deployed(stack):
    """``deployed(name)``: train model ``name``, deploy it with
    tools/deploy.py; its (config, checkpoint, image, work dir, output).
    Each once per module."""
    configs, done = _configs(stack), {}

    def get(name):
        if name not in done:
            cfg, checkpoint, image = configs[name]
            work = stack.tmp / name
            stack.check(
                stack.tool('train.py') +
                [cfg, '--work-dir', str(work)])
            checkpoint = work / checkpoint
            out = stack.check(
                stack.tool('deploy.py') + [
                    cfg,
                    str(checkpoint), image, '--work-dir',
                    str(work / 'onnx')
                ])
            print(''.join(re.findall(r'^\[deploy\].*\n', out, re.M)))
            done[name] = (cfg, checkpoint, image, work / 'onnx', out)
        return done[name]

    return get


@pytest.mark.parametrize('name', ['faster-rcnn', 'retinanet'])
def test_detector_in_onnx_runtime_matches_mmdeploys_pytorch_forward(
        deployed, name):
    out = deployed(name)[-1]
    found = re.search(
        r'(\d+) detections by ONNX Runtime, (\d+) by PyTorch; (\d+) matched: '
        r'min IoU ([\d.]+), max \|score difference\| ([\d.e+-]+); '
        r'unmatched (\d+) \(ONNX Runtime\) \+ (\d+)', out)
    ort, pt, matched, iou, score, *unmatched = found.groups()
    assert int(ort) == int(pt) == int(matched) > 0
    assert float(iou) >= 0.99 and float(score) <= 1e-3
    assert unmatched == ['0', '0']
    assert 'OK: ' in out


def test_segmentor_logits_in_onnx_runtime_match_mmseg(deployed):
    out = deployed('deeplabv3')[-1]
    found = re.search(
        r'logits \(1, 150, (\d+), (\d+)\): max \|difference\| \S+, / max '
        r'\|logit\| ([\d.e+-]+); label maps at the input size agree on '
        r'([\d.]+)%', out)
    height, width, rel, same = found.groups()
    assert (height, width) == ('128', '192')  # the test pipeline's size
    assert float(rel) <= 1e-4 and float(same) > 99
    assert re.search(
        r'label maps at the original size \(200, 300\): '
        r"mmdeploy's \(nearest\) and mmseg's \(bilinear logits\) agree on "
        r'[\d.]+% of pixels', out)
    assert 'OK: ' in out


@pytest.mark.parametrize('name', ['faster-rcnn', 'retinanet', 'deeplabv3'])
def test_graph_holds_only_standard_onnx_ops(deployed, name):
    """Including the heads' NMS and RoIAlign (mmdeploy's ONNX Runtime
    choice at opset 11), and no Split from the split attention."""
    graph = onnx.load(str(deployed(name)[3] / 'end2end.onnx'))
    assert [(o.domain, o.version) for o in graph.opset_import] == [('', 11)]
    assert {n.domain for n in graph.graph.node} == {''}
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & {'Split', 'SplitToSequence', 'Loop', 'If'}
    if name != 'deeplabv3':
        assert {'NonMaxSuppression', 'TopK'} <= ops
    if name == 'faster-rcnn':
        assert 'RoiAlign' in ops


def test_segmentor_graph_runs_in_plain_onnxruntime_at_other_shapes(deployed):
    """No mmdeploy, no custom ops: this process's onnxruntime and torch,
    a batch of 2 at a size the export never saw, against mmseg's logits."""
    from resnest_mm.safe_load import load_checkpoint_safely
    from resnest_tools.runner_setup import build_model, load_config

    cfg, checkpoint, _, work, _ = deployed('deeplabv3')
    session = onnxruntime.InferenceSession(
        str(work / 'end2end.onnx'), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].shape == ['batch', 3, 'height', 'width']
    model = build_model(load_config(cfg)).eval()
    model.load_state_dict(load_checkpoint_safely(checkpoint)['state_dict'])
    x = images((2, 3, 96, 160), torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.encode_decode(x, [dict(img_shape=(96, 160))] * 2)
    got = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])
    assert got.shape == expected.shape == (2, 150, 96, 160)
    assert rel_err(got, expected) < 1e-5
    assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.99


def test_disagreement_beyond_the_tolerance_fails(stack, deployed):
    cfg, checkpoint, image, work, _ = deployed('deeplabv3')
    proc = stack.run(
        stack.tool('deploy.py') + [
            cfg,
            str(checkpoint), image, '--work-dir',
            str(work.parent / 'strict'), '--logits-tol', '0'
        ])
    assert proc.returncode == 1
    assert re.search(
        r'ONNX Runtime disagrees with PyTorch: logits differ by \S+ of the '
        r'largest logit > 0e\+00', proc.stderr), proc.stderr[-3000:]


# What follows needs no stack: this process's venv.
def test_detections_match_one_to_one_by_iou_within_a_class():
    deploy = runpy.run_path(str(ROOT / 'tools/deploy.py'), run_name='deploy')
    boxes = torch.tensor([
        [10., 10., 50., 50., 0.9],
        [128., 80., 128., 110., 0.8],  # clipped to zero width at the border
        [12., 10., 50., 50., 0.7],
        [0., 0., 20., 20., 0.6],
    ])
    labels = torch.tensor([0, 1, 0, 2])
    shifted = boxes + torch.tensor([0., 0., 0., 0., 1e-4])
    shifted[0, 0] += 0.1
    ious, diffs, a_only, b_only = deploy['match_detections'](
        (boxes, labels), (shifted[[2, 1, 0]], labels[[2, 1, 0]]))
    assert len(ious) == 3 and ious.min() > 0.99
    assert torch.allclose(diffs, torch.full((3, ), 1e-4), atol=1e-6)
    assert torch.equal(a_only, boxes[3:, 4]) and len(b_only) == 0
    # another class overlaps but does not match
    ious, _, a_only, b_only = deploy['match_detections'](
        (boxes[3:], labels[3:]), (boxes[3:], torch.tensor([0])))
    assert len(ious) == 0 and len(a_only) == len(b_only) == 1
    # unmatched: at the other side's lowest kept score is the cut-off's doing
    above = deploy['above_cut_off']
    kept = torch.tensor([0.9, 0.5])
    assert above(torch.tensor([0.5005, 0.6]), kept, 1e-3) == 1
    assert above(torch.tensor([0.5]), torch.tensor([]), 1e-3) == 1


# What follows fails before anything is exported.
def _inputs(tmp_path):
    """A detection config, and stand-ins for a checkpoint and an image."""
    (tmp_path / 'ckpt.pth').write_bytes(b'')
    (tmp_path / 'image.jpg').write_bytes(b'')
    return [
        'configs/detection/demo/faster-rcnn_s14_fpn_1x_demo-shapes.py',
        str(tmp_path / 'ckpt.pth'),
        str(tmp_path / 'image.jpg'), '--work-dir',
        str(tmp_path / 'work')
    ]


def test_missing_mmdeploy_is_named_with_the_install_line(tmp_path):
    # as if not installed, whatever this venv holds; the script's folder
    # first on sys.path, as `python tools/deploy.py` has it
    code = ('import os, runpy, sys; sys.modules["mmdeploy"] = None; '
            'sys.argv = sys.argv[1:]; '
            'sys.path.insert(0, os.path.dirname(sys.argv[0])); '
            'runpy.run_path(sys.argv[0], run_name="__main__")')
    proc = run_unchecked(
        [sys.executable, '-c', code,
         str(ROOT / 'tools/deploy.py')] + _inputs(tmp_path))
    assert proc.returncode == 1
    assert re.search(r'^mmdeploy\S* is missing', proc.stderr, re.M)
    assert ('pip install mmdeploy==1.3.1 onnxruntime==1.15.1 onnx==1.17.0 '
            'protobuf==3.20.2' in proc.stderr), proc.stderr


def test_missing_file_is_named(tmp_path):
    args = _inputs(tmp_path)
    args[2] = str(tmp_path / 'nope.jpg')
    proc = run_unchecked(tool('deploy.py') + args)
    assert proc.returncode == 2
    assert f'image not found: {tmp_path / "nope.jpg"}' in proc.stderr


def test_unknown_task_is_refused(tmp_path):
    args = _inputs(tmp_path)
    args[0] = str(tmp_path / 'classifier.py')
    (tmp_path / 'classifier.py').write_text("default_scope = 'mmpretrain'\n")
    proc = run_unchecked(tool('deploy.py') + args)
    assert proc.returncode == 1
    assert "default_scope is 'mmpretrain', so the task is unknown" in (
        proc.stderr)
    assert 'Traceback' not in proc.stderr


def test_deploy_config_of_the_other_task_is_refused(tmp_path):
    args = _inputs(tmp_path) + [
        '--deploy-cfg', 'configs/deploy/segmentation_onnxruntime_dynamic.py'
    ]
    proc = run_unchecked(tool('deploy.py') + args)
    assert proc.returncode == 1
    assert 'deploys mmseg models' in proc.stderr
    assert 'is an mmdet model (detection)' in proc.stderr
