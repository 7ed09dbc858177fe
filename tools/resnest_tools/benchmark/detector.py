"""A Faster R-CNN S-50 FPN (our COCO config) with our backbone and with
upstream's."""
import copy

import torch

from .measure import autocast, interleaved_times, peak_memory
from .models import (CONFIGS, FUSED_SUFFIX, build_with_backbone, fused,
                     inference_only)

DETECTOR_CONFIG = (
    CONFIGS /
    'detection/faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py')


def benchmark_detector(args, device):
    """Train-step and inference seconds of the detector with each backbone;
    with ``args.fuse_conv_bn`` also the inference of both, fused."""
    from mmdet.testing import demo_mm_inputs

    torch.manual_seed(0)
    detectors = {'ours': build_with_backbone(DETECTOR_CONFIG)}
    detectors['upstream mmdet'] = build_with_backbone(
        DETECTOR_CONFIG, upstream=True)
    detectors['upstream mmdet'].load_state_dict(detectors['ours'].state_dict())
    if args.fuse_conv_bn:
        for name in list(detectors):
            detectors[name + FUSED_SUFFIX] = fused(detectors[name])
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
        timed = [n for n in detectors if not (train and inference_only(n))]
        for name in timed:
            detectors[name].train(train)
        times[metric] = interleaved_times({n: steps[n][index]
                                           for n in timed}, device,
                                          args.warmup, args.repeat)
    report = {
        name: {
            metric: times[metric][name]
            for metric in times if name in times[metric]
        }
        for name in detectors
    }
    if device.type == 'cuda':  # the CPU's needs a child process per model
        for name, det in detectors.items():
            if not inference_only(name):
                det.train()
                report[name]['train_peak_mib'] = peak_memory(
                    steps[name][0], device) / 2**20
    for name, r in report.items():
        print(
            f'  Faster R-CNN, {name} backbone: ' + ', '.join(
                text.format(r[key]) for key, text in (
                    ('train_step_s', 'train step {:.3f} s'),
                    ('infer_s', 'inference {:.3f} s'),
                    ('train_peak_mib', 'train peak {:.0f} MiB')) if key in r),
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
