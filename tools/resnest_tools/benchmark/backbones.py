"""Backbones timed in each memory layout, and the training-step peak memory of
each."""
import ctypes
import gc
import json
import os
import subprocess
import sys

import torch
from mmengine.analysis import FlopAnalyzer

from .measure import (autocast, cpu_peak_memories, interleaved_times,
                      peak_memory)
from .models import (base_name, build_models, check_same_function,
                     inference_only)
from .report import best

LAYOUTS = {
    'nchw': torch.contiguous_format,
    'channels_last': torch.channels_last
}

#: glibc told to map every block over 64 KiB on its own and unmap it when
#: freed, so the resident set follows the live tensors
THRESHOLDS = dict(
    MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='65536')


def cpu_peak_memory_in_child(name, args, layout, thresholds=True):
    """A training-step memory measure of ``name`` in MiB, taken by this
    script in a fresh process.

    ``thresholds=True``: the step's peak with glibc's thresholds
    (:data:`THRESHOLDS`) set, about the live tensor bytes, as a GPU's
    caching allocator would peak at (``train_peak_mib``). That setting makes
    each allocation fault in fresh pages, which would slow the timings down,
    hence a separate process. ``thresholds=False``: the peak rise of the
    resident set under glibc's default allocator, what a CPU user who sets
    nothing sees (``train_rss_mib``; the ``MALLOC_*`` variables are removed).
    """
    # sys.argv[0]: the benchmark script that is running, re-run as the child
    cmd = [
        sys.executable, sys.argv[0], '--depth',
        str(args.depth), '--batch',
        str(args.batch), '--size',
        str(args.size), '--device', 'cpu', '--layouts', layout,
        '--peak-memory-of', name
    ] + (['--amp-dtype', args.amp_dtype] if args.amp_dtype else []) + [
        flag for flag, on in (('--with-cp', args.with_cp),
                              ('--no-recompute', args.no_recompute),
                              ('--compile', args.compile)) if on
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    if thresholds:
        env.update(THRESHOLDS)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(
            f'memory measurement of {name} failed:\n{proc.stderr[-2000:]}')
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result['train_peak_mib' if thresholds else 'train_rss_mib']


def inputs_and_steps(model, args, device, layout):
    """The model in ``layout`` and its inference (batch, batch 1) and training
    steps."""
    fmt = LAYOUTS[layout]
    model = model.to(device, memory_format=fmt)
    x = torch.randn(
        args.batch, 3, args.size, args.size,
        device=device).contiguous(memory_format=fmt)
    x1 = x[:1].contiguous(memory_format=fmt)

    def infer(inp):
        with torch.no_grad(), autocast(device, args.amp_dtype):
            model(inp)

    def train_step():
        model.zero_grad(set_to_none=True)
        with autocast(device, args.amp_dtype):
            loss = sum(o.float().mean() for o in model(x))
        loss.backward()

    return (lambda: infer(x)), (lambda: infer(x1)), train_step


def measure_layout(models, args, device, layout):
    """``{name: results}`` for every model in one memory layout, timed in
    turns."""
    steps = {
        name: inputs_and_steps(m, args, device, layout)
        for name, m in models.items()
    }
    times = {}
    for metric, index, train in (('infer', 0, False), ('latency', 1, False),
                                 ('train', 2, True)):
        timed = [n for n in models if not (train and inference_only(n))]
        for name in timed:
            models[name].train(train)
        times[metric] = interleaved_times({n: steps[n][index]
                                           for n in timed}, device,
                                          args.warmup, args.repeat)
    results = {}
    for name, model in models.items():
        train_img_s = peak_mib = rss_mib = None
        if name in times['train']:
            train_img_s = args.batch / times['train'][name]
            model.zero_grad(set_to_none=True)
            if device.type == 'cuda':
                # the caching allocator's peak; a resident set says nothing
                # of GPU memory, so train_rss_mib stays None
                peak_mib = peak_memory(steps[name][2], device) / 2**20
                model.zero_grad(set_to_none=True)
            else:
                peak_mib, rss_mib = (
                    cpu_peak_memory_in_child(name, args, layout, thresholds)
                    for thresholds in (True, False))
        results[name] = dict(
            infer_img_s=args.batch / times['infer'][name],
            train_img_s=train_img_s,
            latency_ms=times['latency'][name] * 1e3,
            train_peak_mib=peak_mib,
            train_rss_mib=rss_mib)
        print(
            f'  {name:24s} {layout:13s} ' +
            ', '.join(f'{k} {v:.2f}'
                      for k, v in results[name].items() if v is not None),
            flush=True)
    return results


def child_peak_memory(args):
    """``--peak-memory-of``: print one model's two training-step memory
    measures (:func:`~.measure.cpu_peak_memories`) as JSON."""
    model = build_models(args.depth, args.with_cp, args.no_recompute,
                         args.compile)[args.peak_memory_of]
    _, _, train_step = inputs_and_steps(model, args, torch.device('cpu'),
                                        args.layouts[0])
    model.train()
    # the other models built beside it are freed: glibc gives their blocks
    # back, so that the steps cannot reuse them unseen
    gc.collect()
    trim = getattr(ctypes.CDLL(None), 'malloc_trim', None)
    if trim is not None:
        trim(0)
    peak, rss = cpu_peak_memories(train_step,
                                  lambda: model.zero_grad(set_to_none=True))
    print(
        json.dumps({
            key: None if value is None else value / 2**20
            for key, value in (('train_peak_mib', peak), ('train_rss_mib',
                                                          rss))
        }))


def benchmark_backbones(args, device):
    models = build_models(args.depth, args.with_cp, args.no_recompute,
                          args.compile, args.fuse_conv_bn)
    x = torch.randn(2, 3, 64, 64)
    same = check_same_function(models, x)
    # variants count as their model: a traced checkpoint fails
    plain = [name for name in models if base_name(name) == name]
    # still in eval mode
    gmacs = {
        name: FlopAnalyzer(models[name], (torch.randn(
            1, 3, args.size, args.size), )).unsupported_ops_warnings(
                False).uncalled_modules_warnings(False).total() / 1e9
        for name in plain
    }
    gmacs.update(
        {name: gmacs[base_name(name)]
         for name in models if name not in plain})
    if args.syncbn:  # after the checks above, which run on the CPU
        models = {
            name: torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            for name, model in models.items()
        }
    per_layout = {
        layout: measure_layout(models, args, device, layout)
        for layout in args.layouts
    }
    report = {}
    for name in models:
        layouts = {layout: per_layout[layout][name] for layout in args.layouts}
        summary = {'gmacs': gmacs[name], 'layouts': layouts}
        for key, higher in (('infer_img_s', True), ('train_img_s', True),
                            ('latency_ms', False), ('train_peak_mib', False),
                            ('train_rss_mib', False)):
            summary[key], summary[key + '_layout'] = best(layouts, key, higher)
        report[name] = summary
    return report, same
