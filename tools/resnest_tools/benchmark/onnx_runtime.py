"""The segmentor and the detector as ``tools/export_onnx.py`` exports them,
run in ONNX Runtime against PyTorch eager on the CPU, with our backbone and
with upstream's."""
import copy
import tempfile
from pathlib import Path

import torch

from .backbones import LAYOUTS
from .detector import DETECTOR_CONFIG
from .measure import interleaved_times
from .models import CONFIGS, build_with_backbone, fused

SEGMENTOR_CONFIG = (
    CONFIGS /
    'segmentation/resnest_s50-d8_deeplabv3_4xb4-160k_ade20k-512x512.py')

#: (what is timed, config, the exporter's wrapper, upstream's backbone)
EXPORTED = (
    ('DeepLabV3 S-50 D8, whole segmentor', SEGMENTOR_CONFIG, 'SegmentorLogits',
     'upstream mmseg'),
    ('Faster R-CNN S-50 FPN, backbone + neck', DETECTOR_CONFIG,
     'DetectorFeatures', 'upstream mmdet'),
)
SCOPE = ('The detector is exported and timed up to its neck (extract_feat), '
         "as tools/export_onnx.py exports it: box decoding and NMS need "
         "mmdeploy's ops.")


def ort_session(path):
    """An ONNX Runtime CPU session using as many threads as torch, so that
    both run on the same cores; its graph optimisations all on (the
    default)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), options, providers=['CPUExecutionProvider'])


def eager_runs(model, x, layouts, fuse):
    """``{(variant, layout): fn}``: eager inference of ``model`` (eval) in
    each memory layout, and fused (``mmcv.cnn.fuse_conv_bn``) with ``fuse``."""
    variants = {'eager': model}
    if fuse:
        variants['eager fused'] = fused(model)
    runs = {}
    for variant, net in variants.items():
        for layout in layouts:
            fmt = LAYOUTS[layout]
            net_l = net if fmt == torch.contiguous_format else copy.deepcopy(
                net).to(memory_format=fmt)
            x_l = x.contiguous(memory_format=fmt)

            def run(net_l=net_l, x_l=x_l):
                with torch.no_grad():
                    net_l(x_l)

            runs[(variant, layout)] = run
    return runs


def benchmark_onnx(args, exporter):
    """``{what: {backbone: results, 'ours/upstream': ratios}}``.

    ``exporter`` is ``tools/export_onnx.py`` as a module: each model is
    exported and checked against PyTorch by its ``export_and_check``
    (static shapes, the torch dynamo exporter), so the graphs timed are the
    ones that tool writes. Times are medians over rounds in turns; eager
    counts its fastest layout. Both models of a pair hold the same weights.
    """
    x = torch.randn(args.onnx_batch, 3, args.onnx_size, args.onnx_size)
    size = (args.onnx_size, args.onnx_size)
    cpu = torch.device('cpu')
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for what, config, wrapper, upstream in EXPORTED:
            models = {'ours': build_with_backbone(config)}
            models[upstream] = build_with_backbone(config, upstream=True)
            models[upstream].load_state_dict(models['ours'].state_dict())
            runs, errors = {}, {}
            for name, model in models.items():
                net = getattr(exporter, wrapper)(model)
                path = Path(tmp) / f'{len(report)}-{name}.onnx'
                errors[name], _ = exporter.export_and_check(
                    net, path, size, args.onnx_batch)
                session, feed = ort_session(path), {'input': x.numpy()}
                runs[name, 'ORT', None] = lambda s=session: s.run(None, feed)
                eager = eager_runs(net, x, args.layouts, args.fuse_conv_bn)
                runs.update({(name, *key): fn for key, fn in eager.items()})
            times = interleaved_times(runs, cpu, args.warmup, args.repeat)
            report[what] = summarize(times, errors, list(models))
    return report


def summarize(times, errors, names):
    """Per backbone: ORT seconds, eager's best layout and seconds, their
    ratio, ORT's difference from PyTorch; and ours/upstream ratios."""
    summary = {}
    for name in names:
        r = dict(ort_s=times[(name, 'ORT', None)], ort_rel_err=errors[name])
        for variant in ('eager', 'eager fused'):
            layouts = {
                layout: t
                for (n, v, layout), t in times.items()
                if n == name and v == variant
            }
            if layouts:
                best = min(layouts, key=layouts.get)
                key = variant.replace(' ', '_')
                r[f'{key}_s'], r[f'{key}_layout'] = layouts[best], best
        r['ort_vs_eager'] = r['ort_s'] / r['eager_s']
        if 'eager_fused_s' in r:
            r['fused_vs_eager'] = r['eager_fused_s'] / r['eager_s']
        summary[name] = r
    ours, upstream = summary[names[0]], summary[names[1]]
    summary['ours/upstream'] = dict(
        eager=ours['eager_s'] / upstream['eager_s'],
        ort=ours['ort_s'] / upstream['ort_s'])
    return summary


def print_onnx(report, args):
    import onnxruntime
    print(f'ONNX Runtime {onnxruntime.__version__} (CPU) against PyTorch '
          f'eager on the CPU, {torch.get_num_threads()} threads each, batch '
          f'{args.onnx_batch}, {args.onnx_size}x{args.onnx_size}, fp32; '
          'ratios of median times (< 1: faster). ' + SCOPE)
    for what, summary in report.items():
        print(f'  {what}:')
        for name, r in summary.items():
            if name == 'ours/upstream':
                print(f"    ours/upstream time: eager {r['eager']:.2f}x, "
                      f"ONNX Runtime {r['ort']:.2f}x")
                continue
            fused_text = ''
            if 'fused_vs_eager' in r:
                fused_text = (', eager conv-bn fused / eager '
                              f"{r['fused_vs_eager']:.2f}x")
            print(f"    {name:15s} ONNX Runtime / eager "
                  f"{r['ort_vs_eager']:.2f}x (eager in {r['eager_layout']})"
                  f'{fused_text}; ONNX Runtime vs PyTorch: max |difference| '
                  f"/ max |output| {r['ort_rel_err']:.1e}")
