"""Deploy a detector or a segmentor through mmdeploy to ONNX Runtime and
check the exported model against PyTorch on an image.

    python tools/deploy.py CONFIG CHECKPOINT IMAGE --work-dir DIR
                           [--deploy-cfg DEPLOY_CONFIG] [--score-tol 1e-3]
                           [--iou-tol 0.99] [--logits-tol 1e-4]

The task is read from CONFIG; the deploy config is by default ours for it
(configs/deploy/: ONNX Runtime, dynamic shapes, opset 11). The whole model is
exported with ``mmdeploy.apis.torch2onnx`` to DIR/end2end.onnx, then run by
mmdeploy's ONNX Runtime wrapper (which loads mmdeploy's custom ops) and by
PyTorch on IMAGE, preprocessed once by mmdeploy's pipeline for both:

- detection: against the forward mmdeploy exported, i.e. the PyTorch model
  under mmdeploy's rewriters, whose post-processing is not mmdet's
  (docs/deploy.md). Detections are matched one to one by IoU within a class;
  the tool fails when a matched IoU is below ``--iou-tol``, a matched score
  differs by more than ``--score-tol``, or one is unmatched and scores above
  all the other side kept (not a mere cut-off of ``keep_top_k``);
- segmentation: against mmseg's own logits at the network's input size; it
  fails when the largest difference exceeds ``--logits-tol`` times the
  largest logit. The label maps at the original size are reported too.

Needs mmdeploy 1.3.1 with the onnxruntime its custom ops are built for; see
docs/deploy.md.
"""
import argparse
import copy
import os.path as osp
import sys
from pathlib import Path

import torch
from mmengine.config import Config

sys.path.insert(0, str(Path(__file__).parents[1]))
from resnest_mm.safe_load import route_mmengine_loading  # noqa: E402
from resnest_tools.runner_setup import load_config, task_of  # noqa: E402

DEPLOY_CONFIGS = Path(__file__).parents[1] / 'configs' / 'deploy'
#: the task's default deploy config
DEPLOY_CONFIG = {
    'detection': DEPLOY_CONFIGS / 'detection_onnxruntime_dynamic.py',
    'segmentation': DEPLOY_CONFIGS / 'segmentation_onnxruntime_dynamic.py',
}
#: what mmdeploy 1.3.1's custom ops and Python APIs were built and tried with
INSTALL = ('pip install mmdeploy==1.3.1 onnxruntime==1.15.1 onnx==1.17.0 '
           'protobuf==3.20.2')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the model config (mmdet or mmseg)')
    parser.add_argument('checkpoint', help='its trained checkpoint')
    parser.add_argument('image', help='an image to export with and compare on')
    parser.add_argument(
        '--work-dir', required=True, help='where end2end.onnx goes')
    parser.add_argument(
        '--deploy-cfg',
        help="mmdeploy's deploy config (default: the task's, configs/deploy)")
    parser.add_argument(
        '--score-tol',
        type=float,
        default=1e-3,
        help='detection: largest |score difference| of matched detections')
    parser.add_argument(
        '--iou-tol',
        type=float,
        default=0.99,
        help='detection: smallest IoU of matched detections')
    parser.add_argument(
        '--logits-tol',
        type=float,
        default=1e-4,
        help='segmentation: largest |logit difference| / largest |logit|')
    args = parser.parse_args()
    for what in ('config', 'checkpoint', 'image', 'deploy_cfg'):
        path = getattr(args, what)
        if path is not None and not osp.isfile(path):
            parser.error(f'{what.replace("_", "-")} not found: {path}')
    return args


def import_mmdeploy():
    """mmdeploy's APIs, or an exit that says how to install them."""
    try:
        import onnxruntime  # noqa: F401
        from mmdeploy.apis import build_task_processor, torch2onnx
    except ImportError as e:
        raise SystemExit(
            f'{e.name} is missing: tools/deploy.py needs mmdeploy and ONNX '
            f'Runtime. On the frozen stack (torch 2.1, mmcv 2.1.0): {INSTALL}')
    return build_task_processor, torch2onnx


def log(msg):
    print(f'[deploy] {msg}', flush=True)


def rewritten_forward(model, inputs, data_samples, deploy_cfg):
    """What the exported graph computes, run by PyTorch: the model's forward
    under mmdeploy's rewriters, set up as ``mmdeploy.apis.onnx.export``
    sets them up (patched modules, then the rewriting context)."""
    from mmdeploy.core import RewriterContext, patch_model
    from mmdeploy.utils import IR, get_backend, get_ir_config

    backend = get_backend(deploy_cfg).value
    patched = patch_model(model, cfg=deploy_cfg, backend=backend, ir=IR.ONNX)
    opset = get_ir_config(deploy_cfg)['opset_version']
    with RewriterContext(
            cfg=deploy_cfg, backend=backend, ir=IR.ONNX,
            opset=opset), torch.no_grad():
        return patched(inputs, data_samples, mode='predict')


def match_detections(a, b):
    """Match detections ``a`` to ``b`` one to one, by the largest total IoU
    within a class (Hungarian assignment).

    Each is ``(dets (n, 5), labels (n,))``. Returns the matched pairs' IoUs
    and |score differences|, and the scores of the unmatched on each side.
    IoUs count a box's edges as pixels (mmcv's ``offset=1``): boxes clipped
    to a zero width at the image's border, the same on both sides, match.
    """
    from mmcv.ops import bbox_overlaps
    from scipy.optimize import linear_sum_assignment

    (a, a_labels), (b, b_labels) = a, b
    iou = bbox_overlaps(a[:, :4], b[:, :4], offset=1)
    iou[a_labels[:, None] != b_labels[None, :]] = 0
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    matched = (iou[rows, cols] > 0).numpy()
    rows, cols = rows[matched], cols[matched]
    a_scores, b_scores = a[:, 4], b[:, 4]
    a_only = torch.ones(len(a), dtype=torch.bool)
    a_only[rows] = False
    b_only = torch.ones(len(b), dtype=torch.bool)
    b_only[cols] = False
    diffs = (a_scores[rows] - b_scores[cols]).abs()
    return iou[rows, cols], diffs, a_scores[a_only], b_scores[b_only]


def above_cut_off(unmatched, kept, tol):
    """How many ``unmatched`` scores exceed every score the other side
    ``kept`` by more than ``tol``.

    The others fell to a cut-off (``keep_top_k``, the score threshold) on one
    side only, by a rounding difference of their score.
    """
    if len(kept) == 0:
        return len(unmatched)
    return int((unmatched > kept.min() + tol).sum())


def unpadded(dets, labels):
    """Without the rows of score 0 that pad the outputs (mmdeploy's
    End2EndModel drops them too)."""
    keep = dets[:, 4] > 0
    return dets[keep].cpu(), labels[keep].cpu()


def compare_detection(backend_model, torch_model, data, inputs, deploy_cfg,
                      args):
    """Failures (a list of messages) of ONNX Runtime against PyTorch."""
    ort_dets, ort_labels = backend_model.predict(inputs)
    torch_dets, torch_labels = rewritten_forward(torch_model, inputs,
                                                 data['data_samples'],
                                                 deploy_cfg)
    failures = []
    for i in range(len(inputs)):
        ort = unpadded(ort_dets[i], ort_labels[i])
        pt = unpadded(torch_dets[i], torch_labels[i])
        ious, score_diffs, ort_only, torch_only = match_detections(ort, pt)
        unexplained = (
            above_cut_off(ort_only, pt[0][:, 4], args.score_tol) +
            above_cut_off(torch_only, ort[0][:, 4], args.score_tol))
        min_iou = ious.min().item() if len(ious) else float('nan')
        max_diff = score_diffs.max().item() if len(ious) else 0.0
        log(f'image {i}: {len(ort[0])} detections by ONNX Runtime, '
            f'{len(pt[0])} by PyTorch; {len(ious)} matched: min IoU '
            f'{min_iou:.6f}, max |score difference| {max_diff:.2e}; '
            f'unmatched {len(ort_only)} (ONNX Runtime) + {len(torch_only)} '
            f'(PyTorch), {unexplained} of them above the cut-off')
        if unexplained:
            failures.append(f'image {i}: {unexplained} detections unmatched')
        if min_iou < args.iou_tol:
            failures.append(
                f'image {i}: a matched IoU is {min_iou:.6f} < {args.iou_tol}')
        if max_diff > args.score_tol:
            failures.append(f'image {i}: scores differ by up to '
                            f'{max_diff:.2e} > {args.score_tol:.0e}')
    return failures


def compare_segmentation(backend_model, torch_model, data, inputs, deploy_cfg,
                         args):
    """Failures (a list of messages) of ONNX Runtime against PyTorch."""
    outputs = backend_model.wrapper({backend_model.input_name: inputs})
    ort_logits = outputs[backend_model.output_names[0]]
    if ort_logits.shape[1] == 1:
        raise SystemExit('the deploy config exports label maps: set '
                         "codebase_config=dict(with_argmax=False), as "
                         'configs/deploy/segmentation_onnxruntime_dynamic.py')
    # mmseg's whole-image inference up to the logits at the input size, which
    # is what mmdeploy's rewritten forward exports
    metas = [dict(img_shape=inputs.shape[2:])] * len(inputs)
    with torch.no_grad():
        torch_logits = torch_model.encode_decode(inputs, metas)
    diff = (ort_logits - torch_logits).abs().max().item()
    rel = diff / torch_logits.abs().max().item()
    same = (ort_logits.argmax(1) == torch_logits.argmax(1)).float().mean()
    log(f'logits {tuple(torch_logits.shape)}: max |difference| {diff:.2e}, '
        f'/ max |logit| {rel:.2e}; label maps at the input size agree on '
        f'{same.item():.4%} of pixels')
    # at the original size: mmdeploy's packing resizes the label map by
    # nearest neighbour, mmseg's the logits bilinearly
    # (both write into the data samples they are given: copies)
    deployed = backend_model.pack_result(ort_logits,
                                         copy.deepcopy(data['data_samples']))
    with torch.no_grad():
        mmseg = torch_model.postprocess_result(
            torch_logits, copy.deepcopy(data['data_samples']))
    agree = torch.cat([(a.pred_sem_seg.data == b.pred_sem_seg.data).flatten()
                       for a, b in zip(deployed, mmseg)]).float().mean()
    log(f'label maps at the original size {tuple(mmseg[0].ori_shape)}: '
        f"mmdeploy's (nearest) and mmseg's (bilinear logits) agree on "
        f'{agree.item():.4%} of pixels (not checked)')
    if rel > args.logits_tol:
        return [
            f'logits differ by {rel:.2e} of the largest logit > '
            f'{args.logits_tol:.0e}'
        ]
    return []


def main():
    args = parse_args()
    route_mmengine_loading()  # checkpoints never run code, on any torch
    try:
        model_cfg = load_config(args.config)
    except ValueError as e:  # the task is unknown
        raise SystemExit(e)
    task = task_of(model_cfg)
    deploy_file = args.deploy_cfg or DEPLOY_CONFIG[task]
    deploy_cfg = Config.fromfile(deploy_file)
    codebase = deploy_cfg.get('codebase_config', {}).get('type')
    if codebase != model_cfg.default_scope:
        raise SystemExit(
            f'{deploy_file} deploys {codebase} models, and {args.config} is '
            f'an {model_cfg.default_scope} model ({task})')
    build_task_processor, torch2onnx = import_mmdeploy()
    from mmdeploy.utils import get_input_shape, get_ir_config

    onnx_file = osp.join(args.work_dir, get_ir_config(deploy_cfg)['save_file'])
    log(f'{task}: exporting {args.config} with {args.checkpoint} to '
        f'{onnx_file} (mmdeploy torch2onnx)')
    torch2onnx(args.image, args.work_dir, osp.basename(onnx_file), deploy_cfg,
               model_cfg, args.checkpoint, 'cpu')

    log('running it in ONNX Runtime and PyTorch on ' + args.image)
    task_processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    torch_model = task_processor.build_pytorch_model(args.checkpoint)
    data, inputs = task_processor.create_input(
        args.image,
        get_input_shape(deploy_cfg),
        data_preprocessor=torch_model.data_preprocessor)
    backend_model = task_processor.build_backend_model(
        [onnx_file], task_processor.update_data_preprocessor)
    compare = (
        compare_detection if task == 'detection' else compare_segmentation)
    failures = compare(backend_model, torch_model, data, inputs, deploy_cfg,
                       args)
    if failures:
        raise SystemExit('ONNX Runtime disagrees with PyTorch: ' +
                         '; '.join(failures))
    log(f'OK: {onnx_file} agrees with PyTorch within the tolerances')


if __name__ == '__main__':
    main()
