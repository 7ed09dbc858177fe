"""Build ResNeSt at each depth and print output shapes, parameters and FLOPs.

    python tools/backbone_demo.py [--depths 50 101] [--size 224]

FLOPs are counted by mmengine's analyzer (one multiply-add = one FLOP, as in
the paper's fvcore table), for the backbone alone (no classifier).
"""
import argparse
import time

import torch
from mmengine.analysis import FlopAnalyzer

from resnest_mm import ResNeSt
from resnest_mm.architectures import STEM_CHANNELS

# The paper's fvcore numbers at 224x224 include the 1000-way classifier
# (2048 * 1000 + 1000 parameters, 2.05 M multiply-adds); subtract it to
# compare.
PAPER = {
    50: (27.48, 5.40),
    101: (48.28, 10.25),
    200: (70.20, 17.50),
    269: (110.93, 22.54)
}
CLASSIFIER_PARAMS_M = (2048 * 1000 + 1000) / 1e6
ALL_DEPTHS = sorted(ResNeSt.arch_settings)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--depths',
        type=int,
        nargs='+',
        default=ALL_DEPTHS,
        choices=ALL_DEPTHS,
        metavar='DEPTH',
        help=f'any of {ALL_DEPTHS}')
    parser.add_argument(
        '--size', type=int, default=224, help='input height and width')
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    print(f'ResNeSt backbones, input 1x3x{args.size}x{args.size} '
          f'(stem width 64 up to depth 50, 128 above, as the authors)')
    header = (f"{'depth':>5} {'params(M)':>9} {'GFLOPs':>7} "
              f"{'paper (-fc)':>15}  stage outputs")
    print(header + '\n' + '-' * len(header))
    for depth in args.depths:
        start = time.perf_counter()
        model = ResNeSt(depth=depth, stem_channels=STEM_CHANNELS[depth]).eval()
        x = torch.randn(1, 3, args.size, args.size)
        shapes = ' '.join('x'.join(map(str, o.shape[1:])) for o in model(x))
        # Element-wise ops are not multiply-adds; fvcore skips them too,
        # silently.
        flops = FlopAnalyzer(model,
                             (x, )).unsupported_ops_warnings(False).total()
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        gflops = flops / 1e9
        paper = ''
        if depth in PAPER and args.size == 224:
            p, f = PAPER[depth]
            paper = f'{p - CLASSIFIER_PARAMS_M:.2f}M {f:.2f}G'
        print(
            f'{depth:>5} {params_m:>9.2f} {gflops:>7.2f} {paper:>15}  {shapes}'
            f'  ({time.perf_counter() - start:.1f}s)',
            flush=True)


if __name__ == '__main__':
    main()
