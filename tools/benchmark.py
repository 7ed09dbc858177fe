"""Benchmark our ResNeSt against upstream mmdet's, the authors' and ResNet, in one process.

    python tools/benchmark.py [--depth 50] [--batch 8] [--size 224] [--device cuda] [--amp]
                              [--json results.json] [--no-detector]

Every ResNeSt gets the same weights (the authors' model's initialisation,
converted), and the run first checks that they compute the same function.
Each model is then timed in NCHW and channels_last after warm-up (median of
``--repeat`` runs) for inference, forward+backward ("train": a training step
without the optimizer), batch-1 latency and the peak memory of a training
step; its best layout counts. Achieved GFLOP/s (2 FLOPs per multiply-add,
training = 3x the forward) is set against a large matrix product timed in the
same run. A Faster R-CNN S-50 FPN detector (our COCO config, random weights)
is timed with our backbone and with upstream's, all else equal.

Peak memory: on CUDA ``max_memory_allocated``; on the CPU the rise of the
process's resident set during the step (Linux), with glibc told to return
freed tensors at once so that it tracks the tensors alive.
"""
import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from mmengine.analysis import FlopAnalyzer

sys.path.insert(0, str(Path(__file__).parents[1]))
from resnest_mm import ResNeSt, convert_checkpoint  # noqa: E402
from resnest_mm.architectures import STEM_CHANNELS  # noqa: E402
from resnest_mm.tooling.references import authors_layer4  # noqa: E402

DETECTOR_CONFIG = (Path(__file__).parents[1] / 'configs/detection/'
                   'faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py')
LAYOUTS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
AUTHORS_DEPTHS = (50, 101, 200, 269)
CP_SUFFIX = ' (with_cp)'
UPSTREAM_DEPTHS = (50, 101, 152, 200)  # mmdet's ResNeSt has no 14, 26 or 269
RESNET_DEPTHS = (18, 34, 50, 101, 152)


class AuthorsBackbone(torch.nn.Module):
    """The authors' network up to ``layer4``: their forward ends in the classifier."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return authors_layer4(self.net, x)


def build_models(depth, with_cp=False):
    """``{name: backbone}``; every ResNeSt holds the same weights.

    ``with_cp`` adds ours and upstream with gradient checkpointing per block.
    """
    from mmdet.models.backbones import ResNet
    from mmdet.models.backbones import ResNeSt as UpstreamResNeSt

    stem = STEM_CHANNELS[depth]  # the authors' widths
    ours = ResNeSt(depth=depth, stem_channels=stem)
    models = {'ours': ours, 'upstream mmdet': UpstreamResNeSt(depth=depth, stem_channels=stem)}
    if with_cp:
        models['ours' + CP_SUFFIX] = ResNeSt(depth=depth, stem_channels=stem, with_cp=True)
        models['upstream mmdet' + CP_SUFFIX] = UpstreamResNeSt(depth=depth, stem_channels=stem,
                                                             with_cp=True)
    if depth in AUTHORS_DEPTHS:
        from resnest.torch import resnest
        authors = getattr(resnest, f'resnest{depth}')(pretrained=False)
        ours.load_state_dict(convert_checkpoint(authors.state_dict()).state_dict)
        models['authors'] = AuthorsBackbone(authors)
    else:
        ours.init_weights()
    for name, model in models.items():
        if name not in ('ours', 'authors'):
            model.load_state_dict(ours.state_dict())
    resnet_depth = depth if depth in RESNET_DEPTHS else 50
    models[f'ResNet-{resnet_depth} (mmdet)'] = ResNet(depth=resnet_depth)
    return models


def last_output(out):
    return out[-1] if isinstance(out, (tuple, list)) else out


def check_same_function(models, x):
    """Largest relative difference of each ResNeSt's last stage from ours (eval, fp32)."""
    outputs = {}
    for name, model in models.items():
        if 'ResNet' not in name:
            model.eval()  # upstream's eval() returns None, so not chained
            with torch.no_grad():
                outputs[name] = last_output(model(x))
    ref = outputs.pop('ours')
    return {name: ((out - ref).norm() / ref.norm()).item() for name, out in outputs.items()}


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def interleaved_times(fns, device, warmup, repeat):
    """Median seconds of each of ``{name: fn}``, timed in turns.

    Each round runs every function once, so a slow spell of a shared machine
    slows all of them alike instead of whichever ran then.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(fn, device):
    """Peak bytes that ``fn`` adds to what is allocated before it, or None where unknown.

    CUDA: ``max_memory_allocated``. CPU: the rise of the resident set, which
    tracks the live tensors only when glibc returns freed blocks at once
    (see :func:`cpu_peak_memory_in_child`).
    """
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    clear_refs = Path('/proc/self/clear_refs')
    if not clear_refs.exists():
        return None
    base = _proc_status('VmRSS')
    clear_refs.write_text('5')  # resets the resident-set peak (VmHWM) to now
    fn()
    return _proc_status('VmHWM') - base


def _proc_status(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024


def cpu_peak_memory_in_child(name, args, layout):
    """Peak MiB of ``name``'s training step, measured by this script in a fresh process.

    The child runs with glibc told to map every block over 64 KiB on its own
    and unmap it when freed, so its resident set follows the live tensors.
    That setting makes each allocation fault in fresh pages, which would
    slow the timings down, hence a separate process.
    """
    cmd = [sys.executable, __file__, '--depth', str(args.depth), '--batch', str(args.batch),
           '--size', str(args.size), '--device', 'cpu', '--layouts', layout,
           '--peak-memory-of', name] + (['--amp'] if args.amp else []) + (
               ['--with-cp'] if args.with_cp else [])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='65536')
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'memory measurement of {name} failed:\n{proc.stderr[-2000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])['train_peak_mib']


def autocast(device, amp):
    if not amp:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == 'cuda' else torch.bfloat16)


def inputs_and_steps(model, args, device, layout):
    """The model in ``layout`` and its inference (batch, batch 1) and training steps."""
    fmt = LAYOUTS[layout]
    model = model.to(device, memory_format=fmt)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    x1 = x[:1].contiguous(memory_format=fmt)

    def infer(inp):
        with torch.no_grad(), autocast(device, args.amp):
            model(inp)

    def train_step():
        model.zero_grad(set_to_none=True)
        with autocast(device, args.amp):
            loss = sum(o.float().mean() for o in model(x))
        loss.backward()

    return (lambda: infer(x)), (lambda: infer(x1)), train_step


def measure_layout(models, args, device, layout):
    """``{name: results}`` for every model in one memory layout, timed in turns."""
    steps = {name: inputs_and_steps(m, args, device, layout) for name, m in models.items()}
    times = {}
    for metric, index, train in (('infer', 0, False), ('latency', 1, False), ('train', 2, True)):
        for model in models.values():
            model.train(train)
        times[metric] = interleaved_times({n: s[index] for n, s in steps.items()},
                                          device, args.warmup, args.repeat)
    results = {}
    for name, model in models.items():
        model.zero_grad(set_to_none=True)
        if device.type == 'cuda':
            peak_mib = peak_memory(steps[name][2], device) / 2**20
            model.zero_grad(set_to_none=True)
        else:
            peak_mib = cpu_peak_memory_in_child(name, args, layout)
        results[name] = dict(infer_img_s=args.batch / times['infer'][name],
                             train_img_s=args.batch / times['train'][name],
                             latency_ms=times['latency'][name] * 1e3, train_peak_mib=peak_mib)
        print(f'  {name:24s} {layout:13s} ' + ', '.join(
            f'{k} {v:.2f}' for k, v in results[name].items() if v is not None), flush=True)
    return results


def child_peak_memory(args):
    """``--peak-memory-of``: print one model's training-step peak as JSON."""
    model = build_models(args.depth, args.with_cp)[args.peak_memory_of]
    _, _, train_step = inputs_and_steps(model, args, torch.device('cpu'), args.layouts[0])
    model.train()
    train_step()  # once first: one-off allocations (oneDNN's caches) are not the step's
    model.zero_grad(set_to_none=True)
    peak = peak_memory(train_step, torch.device('cpu'))
    print(json.dumps({'train_peak_mib': None if peak is None else peak / 2**20}))


def matmul_peak_gflops(device, amp, args):
    """GFLOP/s of a large square matrix product: the machine's practical peak."""
    n = 8192 if device.type == 'cuda' else 4096
    dtype = (torch.float16 if device.type == 'cuda' else torch.bfloat16) if amp else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = interleaved_times({'mm': lambda: a @ b}, device, args.warmup, args.repeat)['mm']
    return 2 * n**3 / seconds / 1e9


def best(results, key, higher_is_better=True):
    """The best value of ``key`` over layouts, and that layout."""
    valid = {k: r[key] for k, r in results.items() if r[key] is not None}
    if not valid:
        return None, None
    layout = (max if higher_is_better else min)(valid, key=valid.get)
    return valid[layout], layout


def benchmark_backbones(args, device):
    models = build_models(args.depth, args.with_cp)
    x = torch.randn(2, 3, 64, 64)
    same = check_same_function(models, x)
    plain = [name for name in models if not name.endswith(CP_SUFFIX)]  # a traced checkpoint fails
    gmacs = {name: FlopAnalyzer(models[name], (torch.randn(1, 3, args.size, args.size), ))
             .unsupported_ops_warnings(False).uncalled_modules_warnings(False).total() / 1e9
             for name in plain}  # still in eval mode
    gmacs.update({name: gmacs[name[:-len(CP_SUFFIX)]] for name in models if name not in plain})
    per_layout = {layout: measure_layout(models, args, device, layout) for layout in args.layouts}
    report = {}
    for name in models:
        layouts = {layout: per_layout[layout][name] for layout in args.layouts}
        summary = {'gmacs': gmacs[name], 'layouts': layouts}
        for key, higher in (('infer_img_s', True), ('train_img_s', True),
                            ('latency_ms', False), ('train_peak_mib', False)):
            summary[key], summary[key + '_layout'] = best(layouts, key, higher)
        report[name] = summary
    return report, same


def build_detector(backbone):
    """Faster R-CNN S-50 FPN from our COCO config, in a single process, with ``backbone``'s ResNeSt."""
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
    data = demo_mm_inputs(batch_size=args.det_batch, image_shapes=(3, args.det_size, args.det_size),
                          num_items=[5] * args.det_batch, num_classes=80)
    steps = {name: detector_steps(det.to(device), data, args, device)
             for name, det in detectors.items()}
    times = {}
    for metric, index, train in (('train_step_s', 0, True), ('infer_s', 1, False)):
        for det in detectors.values():
            det.train(train)
        times[metric] = interleaved_times({n: s[index] for n, s in steps.items()},
                                          device, args.warmup, args.repeat)
    report = {name: {metric: times[metric][name] for metric in times} for name in detectors}
    for name, r in report.items():
        print(f"  Faster R-CNN, {name} backbone: train step {r['train_step_s']:.3f} s, "
              f"inference {r['infer_s']:.3f} s", flush=True)
    return report


def detector_steps(det, data, args, device):
    """A detector's training step (forward, losses, backward) and inference."""
    train_data = det.data_preprocessor(copy.deepcopy(data), True)
    test_data = det.data_preprocessor(copy.deepcopy(data), False)

    def train_step():
        det.zero_grad(set_to_none=True)
        with autocast(device, args.amp):
            losses = det(**train_data, mode='loss')
        loss, _ = det.parse_losses(losses)
        loss.backward()

    def infer():
        with torch.no_grad(), autocast(device, args.amp):
            det(**test_data, mode='predict')

    return train_step, infer


def machine(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    name = platform.processor()
    if Path('/proc/cpuinfo').exists():
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                name = line.split(':', 1)[1].strip()
                break
    return f'{name}, {torch.get_num_threads()} threads'


def ratio(a, b):
    return None if a is None or b is None else a / b


def print_table(report, peak, args):
    up = report['upstream mmdet']
    head = (f"{'model':24s} {'GMACs':>6s} {'infer img/s':>16s} {'train img/s':>16s} "
            f"{'b1 latency ms':>18s} {'train peak MiB':>18s} {'GFLOP/s infer':>14s} "
            f"{'img/s x GMACs':>14s}")
    print(head + '\n' + '-' * len(head))
    for name, r in report.items():
        cells = []
        for key, fmt in (('infer_img_s', '{:7.2f}'), ('train_img_s', '{:7.2f}'),
                         ('latency_ms', '{:8.1f}'), ('train_peak_mib', '{:8.0f}')):
            if r[key] is None:
                cells.append(f"{'n/a':>16s}")
                continue
            rel = ratio(r[key], up[key])
            cells.append(fmt.format(r[key]) + f' {rel:4.2f}x' + (' cl' if r[key + '_layout'] == 'channels_last' else '   '))
        achieved = 2 * r['gmacs'] * r['infer_img_s']
        print(f"{name:24s} {r['gmacs']:6.2f} {cells[0]:>16s} {cells[1]:>16s} {cells[2]:>18s} "
              f"{cells[3]:>18s} {achieved:6.0f} ({achieved / peak:3.0%}) "
              f"{r['infer_img_s'] * r['gmacs']:8.1f}")
    print('(ratios are to upstream mmdet; "cl" marks channels_last as the faster layout; '
          f'matmul peak {peak:.0f} GFLOP/s)')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--depth', type=int, default=50, choices=UPSTREAM_DEPTHS)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=224, help='input height and width')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='autocast: float16 on CUDA, bfloat16 on the CPU')
    parser.add_argument('--with-cp', action='store_true',
                        help='add ours and upstream with gradient checkpointing (with_cp=True)')
    parser.add_argument('--layouts', nargs='+', default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--no-detector', dest='detector', action='store_false',
                        help='skip the Faster R-CNN S-50 timing')
    parser.add_argument('--det-size', type=int, default=320, help='detector image size')
    parser.add_argument('--det-batch', type=int, default=2)
    parser.add_argument('--json', help='also write the results to this file')
    parser.add_argument('--peak-memory-of', help=argparse.SUPPRESS)  # the memory child's model
    args = parser.parse_args()
    if min(args.batch, args.det_batch) < 2:
        parser.error('--batch and --det-batch must be at least 2: upstream ResNeSt cannot '
                     'train on one image (its attention BatchNorm needs two values per channel)')
    if args.size < 32 or args.repeat < 1 or args.warmup < 0:
        parser.error('need --size >= 32, --repeat >= 1 and --warmup >= 0')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: this torch has no CUDA device')
    return args


def main():
    args = parse_args()
    if args.peak_memory_of:
        return child_peak_memory(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    where = machine(device)
    print(f'ResNeSt-{args.depth}, batch {args.batch}, {args.size}x{args.size}, '
          f"{'AMP' if args.amp else 'fp32'}, {where}, torch {torch.__version__}", flush=True)
    peak = matmul_peak_gflops(device, args.amp, args)
    backbones, same = benchmark_backbones(args, device)
    print('same function as ours (relative difference of the last stage): ' +
          ', '.join(f'{k} {v:.1e}' for k, v in same.items()))
    print_table(backbones, peak, args)
    results = dict(settings=vars(args), machine=where, torch=torch.__version__,
                   matmul_peak_gflops=peak, same_function=same, backbones=backbones)
    if args.detector:
        det = benchmark_detector(args, device)
        results['detector'] = det
        print(f"Faster R-CNN S-50 FPN, {args.det_batch}x{args.det_size}x{args.det_size}: ours/upstream "
              f"train step time {det['ours']['train_step_s'] / det['upstream mmdet']['train_step_s']:.2f}x, "
              f"inference time {det['ours']['infer_s'] / det['upstream mmdet']['infer_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
