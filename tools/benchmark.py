"""Benchmark our ResNeSt against upstream mmdet's, the authors' and ResNet, in
one process.

    python tools/benchmark.py [--depth 50] [--batch 8] [--size 224]
                              [--device cuda] [--amp [--amp-dtype bfloat16]]
                              [--with-cp] [--no-recompute] [--compile]
                              [--fuse-conv-bn] [--onnx [--onnx-size 320]]
                              [--json results.json] [--no-detector]
    torchrun --nproc-per-node 2 tools/benchmark.py --device cuda --syncbn ...

Every ResNeSt gets the same weights (the authors' model's initialisation,
converted), and the run first checks that they compute the same function.
Each model is then timed in NCHW and channels_last after warm-up (median of
``--repeat`` runs) for inference, forward+backward ("train": a training step
without the optimizer), batch-1 latency and the peak memory of a training
step; its best layout counts. Achieved GFLOP/s (2 FLOPs per multiply-add,
training = 3x the forward) is set against a large matrix product timed in the
same run. A Faster R-CNN S-50 FPN detector (our COCO config, random weights)
is timed with our backbone and with upstream's, all else equal (not under
autocast on the CPU, where mmcv's NMS takes float32 only).

``--fuse-conv-bn`` adds ours and upstream with each BatchNorm folded into the
conv before it (``mmcv.cnn.fuse_conv_bn``, what ``tools/test.py
--fuse-conv-bn`` runs), timed in inference only, backbones and detector.
``--onnx`` exports a DeepLabV3 S-50 segmentor (whole) and the Faster R-CNN
S-50 FPN up to its neck (what ``tools/export_onnx.py`` exports of a detector)
with each backbone, and times them in ONNX Runtime against PyTorch eager on
the CPU, as ratios.

``--syncbn`` (under torchrun, on CUDA) turns every BatchNorm into
SyncBatchNorm across the processes: on NCCL with a GPU per process, on gloo
when several share one GPU (NCCL refuses that). Rank 0 reports.

Memory of a training step, two measures side by side: ``train_peak_mib``,
on CUDA ``max_memory_allocated``, on the CPU the rise of the resident set
during the step (Linux) with glibc told to return freed blocks at once
(``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` at 64 KiB), so
about the live tensor bytes, what a GPU's caching allocator peaks at; and,
on the CPU only (None on CUDA), ``train_rss_mib``, the resident set's peak
rise over two steps under glibc's default allocator, what a CPU user who
sets nothing sees. Each is measured in a fresh child process per model.
"""
import argparse
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
# isort: off
from resnest_tools.benchmark.backbones import (  # noqa: E402
    LAYOUTS, benchmark_backbones, child_peak_memory)
from resnest_tools.benchmark.detector import (  # noqa: E402
    benchmark_detector)
from resnest_tools.benchmark.measure import (  # noqa: E402
    machine, matmul_peak_gflops)
from resnest_tools.benchmark.models import (  # noqa: E402
    FUSED_SUFFIX, UPSTREAM_DEPTHS)
from resnest_tools.benchmark.onnx_runtime import (  # noqa: E402
    benchmark_onnx, print_onnx)
from resnest_tools.benchmark.report import print_table  # noqa: E402
# isort: on


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--depth', type=int, default=50, choices=UPSTREAM_DEPTHS)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument(
        '--size', type=int, default=224, help='input height and width')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='autocast: float16 on CUDA, bfloat16 on the CPU')
    parser.add_argument(
        '--amp-dtype',
        choices=('float16', 'bfloat16'),
        help='autocast to this dtype (implies --amp)')
    parser.add_argument(
        '--with-cp',
        action='store_true',
        help='add ours and upstream with gradient checkpointing (with_cp=True)'
    )
    parser.add_argument(
        '--no-recompute',
        action='store_true',
        help='add ours without its memory-saving path '
        '(recompute_activations=False)')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='add ours and upstream under torch.compile (the warm-up runs '
        'include compiling)')
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='add ours and upstream with the BatchNorms folded into the '
        'convs (inference only)')
    parser.add_argument(
        '--onnx',
        action='store_true',
        help='time the exported segmentor and detector (to its neck) in '
        'ONNX Runtime against PyTorch eager, on the CPU')
    parser.add_argument(
        '--onnx-size', type=int, default=320, help='--onnx image size')
    parser.add_argument('--onnx-batch', type=int, default=1)
    parser.add_argument(
        '--syncbn',
        action='store_true',
        help='SyncBatchNorm across the processes of torchrun (CUDA only)')
    parser.add_argument(
        '--layouts', nargs='+', default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument(
        '--no-detector',
        dest='detector',
        action='store_false',
        help='skip the Faster R-CNN S-50 timing')
    parser.add_argument(
        '--det-size', type=int, default=320, help='detector image size')
    parser.add_argument('--det-batch', type=int, default=2)
    parser.add_argument('--json', help='also write the results to this file')
    # the memory child's model
    parser.add_argument('--peak-memory-of', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.batch, args.det_batch) < 2:
        parser.error(
            '--batch and --det-batch must be at least 2: upstream ResNeSt '
            'cannot train on one image (its attention BatchNorm needs two '
            'values per channel)')
    if args.size < 32 or args.repeat < 1 or args.warmup < 0:
        parser.error('need --size >= 32, --repeat >= 1 and --warmup >= 0')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: this torch has no CUDA device')
    if args.amp and not args.amp_dtype:
        args.amp_dtype = 'float16' if args.device.startswith(
            'cuda') else 'bfloat16'
    if args.syncbn and (not args.device.startswith('cuda')
                        or int(os.environ.get('WORLD_SIZE', 1)) < 2):
        parser.error('--syncbn needs --device cuda and at least 2 processes: '
                     'torchrun --nproc-per-node 2 tools/benchmark.py '
                     "--device cuda --syncbn (torch's SyncBatchNorm runs on "
                     'GPUs only)')
    if args.onnx:
        missing = [
            m for m in ('onnxruntime', 'onnxscript')
            if importlib.util.find_spec(m) is None
        ]
        if 'dynamo' not in inspect.signature(torch.onnx.export).parameters:
            parser.error('--onnx exports as tools/export_onnx.py does, with '
                         'torch.onnx.export(dynamo=True), which torch '
                         f'{torch.__version__} lacks: it needs torch >= 2.5')
        if missing:
            parser.error(f"--onnx needs {' and '.join(missing)}: pip install "
                         'onnx onnxruntime onnxscript')
        if args.onnx_size < 32:
            parser.error('--onnx-size must be at least 32')
    if args.compile and args.warmup < 1:
        parser.error('--compile needs --warmup >= 1 (compiling happens in '
                     'the first run and is not timed)')
    return args


def init_syncbn_processes():
    """Join torchrun's process group; only rank 0 prints. Returns the
    device."""
    import torch.distributed as dist
    rank = int(os.environ['RANK'])
    world_size = int(os.environ['WORLD_SIZE'])
    gpus = torch.cuda.device_count()
    torch.cuda.set_device(int(os.environ['LOCAL_RANK']) % gpus)
    dist.init_process_group('nccl' if gpus >= world_size else 'gloo')
    if rank:
        sys.stdout = open(os.devnull, 'w')
    return torch.device('cuda', torch.cuda.current_device())


def main():
    args = parse_args()
    if args.peak_memory_of:
        return child_peak_memory(args)
    device = torch.device(args.device)
    if args.syncbn:
        device = init_syncbn_processes()
        args.detector = False  # its RoI heads' batches differ by rank
    if args.detector and args.amp_dtype and device.type == 'cpu':
        print(
            'Faster R-CNN left out: under autocast on the CPU its RPN fails '
            "in mmcv's NMS, whose CPU kernel takes float32 only",
            flush=True)
        args.detector = False
    torch.manual_seed(0)
    where = machine(device)
    print(
        f'ResNeSt-{args.depth}, batch {args.batch}, {args.size}x{args.size}, '
        f"{'AMP ' + args.amp_dtype if args.amp_dtype else 'fp32'}, {where}, "
        f'torch {torch.__version__}',
        flush=True)
    peak = matmul_peak_gflops(device, args.amp_dtype, args)
    backbones, same = benchmark_backbones(args, device)
    print('same function as ours (relative difference of the last stage): ' +
          ', '.join(f'{k} {v:.1e}' for k, v in same.items()))
    print_table(backbones, peak, args)
    results = dict(
        settings=vars(args),
        machine=where,
        torch=torch.__version__,
        matmul_peak_gflops=peak,
        same_function=same,
        backbones=backbones)
    if args.detector:
        det = benchmark_detector(args, device)
        results['detector'] = det
        ours, upstream = det['ours'], det['upstream mmdet']
        print('Faster R-CNN S-50 FPN, '
              f'{args.det_batch}x{args.det_size}x{args.det_size}: '
              'ours/upstream train step time '
              f"{ours['train_step_s'] / upstream['train_step_s']:.2f}x, "
              f"inference time {ours['infer_s'] / upstream['infer_s']:.2f}x")
        if args.fuse_conv_bn:
            print('  conv-bn fused / unfused inference time: ' + ', '.join(
                f'{name} '
                f"{det[name + FUSED_SUFFIX]['infer_s'] / r['infer_s']:.2f}x"
                for name, r in (('ours', ours), ('upstream mmdet', upstream))))
    if args.onnx:
        import export_onnx  # tools/, this script's folder
        results['onnx'] = benchmark_onnx(args, export_onnx)
        print_onnx(results['onnx'], args)
    if args.json and int(os.environ.get('RANK', 0)) == 0:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
