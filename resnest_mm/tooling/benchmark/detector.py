"""A Faster R-CNN S-50 FPN (our COCO config) with our backbone and with
upstream's."""
import copy
from pathlib import Path

import torch

from .measure import autocast, interleaved_times, peak_memory

DETECTOR_CONFIG = (
    Path(__file__).parents[3] / 'configs/detection/'
    'faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py')


def build_detector(backbone):
    """Faster R-CNN S-50 FPN from our COCO config, in a single process, with
    ``backbone``'s ResNeSt."""
    from mmdet.models.backbones import ResNeSt as UpstreamResNeSt
    from mmengine.model import revert_sync_batchnorm

    from resnest_mm.tooling.runner_setup import build_model, load_config
    cfg = load_config(str(DETECTOR_CONFIG))
    detector = build_model(cfg)
    if backbone == 'upstream mmdet':
        kwargs = {k: v for k, v in cfg.model.backbone.items() if k != 'type'}
        detector.backbone = revert_sync_batchnorm(UpstreamResNeSt(**kwargs))
    return detector


def benchmark_detector(args, device):
    from mmdet.testing import demo_mm_inputs

    torch.manual_seed(0)
    detectors = {'ours': build_detector('ours')}
    detectors['upstream mmdet'] = build_detector('upstream mmdet')
    detectors['upstream mmdet'].load_state_dict(detectors['ours'].state_dict())
    data = demo_mm_inputs(
        batch_size=args.det_batch,
        image_shapes=(3, args.det_size, args.det_size),
        num_items=[5] * args.det_batch,
        num_classes=80)
    steps = {
        name: detector_steps(det.to(device), data, args, device)
        for name, det in detectors.items()
    }
    times = {}
    for metric, index, train in (('train_step_s', 0, True), ('infer_s', 1,
                                                             False)):
        for det in detectors.values():
            det.train(train)
        times[metric] = interleaved_times(
            {n: s[index]
             for n, s in steps.items()}, device, args.warmup, args.repeat)
    report = {
        name: {metric: times[metric][name]
               for metric in times}
        for name in detectors
    }
    if device.type == 'cuda':  # the CPU's needs a child process per model
        for name, det in detectors.items():
            det.train()
            report[name]['train_peak_mib'] = peak_memory(
                steps[name][0], device) / 2**20
    for name, r in report.items():
        print(
            f"  Faster R-CNN, {name} backbone: "
            f"train step {r['train_step_s']:.3f} s, "
            f"inference {r['infer_s']:.3f} s" +
            (f", train peak {r['train_peak_mib']:.0f} MiB"
             if 'train_peak_mib' in r else ''),
            flush=True)
    return report


def detector_steps(det, data, args, device):
    """A detector's training step (forward, losses, backward) and inference."""
    train_data = det.data_preprocessor(copy.deepcopy(data), True)
    test_data = det.data_preprocessor(copy.deepcopy(data), False)

    def train_step():
        det.zero_grad(set_to_none=True)
        with autocast(device, args.amp_dtype):
            losses = det(**train_data, mode='loss')
        loss, _ = det.parse_losses(losses)
        loss.backward()

    def infer():
        with torch.no_grad(), autocast(device, args.amp_dtype):
            det(**test_data, mode='predict')

    return train_step, infer
