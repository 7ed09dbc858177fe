"""Export a ResNeSt backbone, or a config's model, to ONNX and check it with
onnxruntime.

    # a backbone, random or with weights in any layout resnest_mm reads
    python tools/export_onnx.py backbone resnest50.onnx --depth 50
                                [--weights resnest50-528c19ca.pth]
    # a config's model, with a trained checkpoint
    python tools/export_onnx.py \
      configs/segmentation/resnest_s101-d8_deeplabv3_4xb2-80k_cityscapes-*.py \
      deeplab.onnx --checkpoint iter_80000.pth --size 512 1024

What a config exports: a segmentor's whole network up to the per-pixel logits
(mmseg's ``mode='tensor'``); a detector's backbone and neck (``extract_feat``),
because box decoding and NMS are mmdeploy's job and need its custom ops.

The exported graph is run by onnxruntime on a random input and compared with
PyTorch; the tool fails (exit 1) when the largest difference exceeds
``--tol`` times the largest output magnitude. It exports with torch's dynamo
exporter (``torch.onnx.export(dynamo=True)``, torch >= 2.5) and refuses an
older torch, saying so.
"""
import argparse
import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from resnest_mm import ResNeSt, load_pretrained  # noqa: E402
from resnest_mm.architectures import STEM_CHANNELS  # noqa: E402


class SegmentorLogits(torch.nn.Module):
    """``(N, 3, H, W) -> (N, classes, H/s, W/s)`` logits of an mmseg
    segmentor."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x):
        return self.segmentor(x, mode='tensor')


class DetectorFeatures(torch.nn.Module):
    """``(N, 3, H, W) ->`` the neck's feature maps of an mmdet detector."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        return tuple(self.detector.extract_feat(x))


def build_backbone(args):
    model = ResNeSt(depth=args.depth, stem_channels=STEM_CHANNELS[args.depth])
    if args.weights:
        print(load_pretrained(model, args.weights))
    return model


def build_from_config(args):
    from mmengine.runner import load_checkpoint

    from resnest_tools.runner_setup import build_model, load_config, task_of

    # names the problem on a missing or scope-less config
    cfg = load_config(args.target)
    model = build_model(cfg)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    return (SegmentorLogits(model)
            if task_of(cfg) == 'segmentation' else DetectorFeatures(model))


def max_relative_error(onnx_outputs, torch_outputs):
    """Largest |difference| over all outputs, relative to the
    largest |output|."""
    worst = 0.0
    for got, want in zip(onnx_outputs, torch_outputs):
        got = torch.from_numpy(got)
        worst = max(worst, ((got - want).abs().max() /
                            want.abs().max().clamp_min(1e-12)).item())
    return worst


def export_and_check(model, path, size, batch=1, dynamic=False):
    """Export ``model`` (eval mode) to ``path``; return onnxruntime's relative
    error and the output shapes.

    With ``dynamic``, the graph is also checked on a larger batch and image.
    """
    import onnxruntime

    model.eval()
    # torch.export specializes a dimension whose example size is 1 (torch
    # 2.8 then bakes batch 1 into the graph's reshapes): trace a dynamic
    # batch with 2
    inputs = [torch.randn(max(batch, 2) if dynamic else batch, 3, *size)]
    dynamic_shapes = None
    if dynamic:
        dims = {
            0: torch.export.Dim('batch'),
            2: torch.export.Dim('height'),
            3: torch.export.Dim('width')
        }
        dynamic_shapes = {'x': dims}
        inputs.append(torch.randn(batch + 2, 3, size[0] + 32, size[1] + 64))
    with torch.no_grad():
        torch.onnx.export(
            model, (inputs[0], ),
            path,
            dynamo=True,
            input_names=['input'],
            dynamic_shapes=dynamic_shapes,
            verbose=False)
    session = onnxruntime.InferenceSession(
        str(path), providers=['CPUExecutionProvider'])
    err, shapes = 0.0, []
    for x in inputs:
        with torch.no_grad():
            expected = model(x)
        expected = expected if isinstance(expected,
                                          (tuple, list)) else (expected, )
        err = max(
            err,
            max_relative_error(
                session.run(None, {'input': x.numpy()}), expected))
        shapes.append([tuple(e.shape) for e in expected])
    return err, shapes


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'target', help="'backbone', or an mmdet/mmseg config file")
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument(
        '--depth',
        type=int,
        default=50,
        choices=sorted(ResNeSt.arch_settings),
        help='backbone depth (target backbone)')
    parser.add_argument(
        '--weights', help='backbone weights in any layout resnest_mm reads')
    parser.add_argument('--checkpoint', help="the config's trained checkpoint")
    parser.add_argument(
        '--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help='batch, height and width as dynamic axes')
    parser.add_argument('--tol', type=float, default=1e-4)
    args = parser.parse_args()
    if args.target == 'backbone' and args.checkpoint:
        parser.error(
            '--checkpoint is for a config; give backbone weights with '
            '--weights')
    if args.target != 'backbone' and args.weights:
        parser.error('--weights is for target backbone; give a config model '
                     '--checkpoint')
    if min(args.size) < 32:
        parser.error(
            '--size must be at least 32x32 (the backbone downsamples 32 times)'
        )
    return args


def main():
    args = parse_args()
    if 'dynamo' not in inspect.signature(torch.onnx.export).parameters:
        raise SystemExit('tools/export_onnx.py exports with '
                         'torch.onnx.export(dynamo=True), which torch '
                         f'{torch.__version__} lacks: it needs torch >= 2.5.')
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SystemExit(
            f'{e.name} is missing: run tools/setup.sh, or pip install onnx '
            'onnxruntime onnxscript')
    model = (
        build_backbone(args)
        if args.target == 'backbone' else build_from_config(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    err, shapes = export_and_check(model, args.out, args.size, args.batch,
                                   args.dynamic)
    print(f'wrote {args.out}; outputs {shapes[0]}; onnxruntime vs PyTorch: '
          f'max |difference| / max |output| = {err:.2e} '
          f'(tolerance {args.tol:.0e})')
    if err > args.tol:
        raise SystemExit(
            f'onnxruntime differs from PyTorch by {err:.2e} > {args.tol:.0e}')


if __name__ == '__main__':
    main()
