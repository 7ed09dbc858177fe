"""Generate a small demo dataset in an exact public layout (deterministic).

    python tools/make_demo_data.py coco data/coco [--num-train 240]
                                   [--num-val 60]
    python tools/make_demo_data.py ade20k data/ade
                                   # data/ade/ADEChallengeData2016/
    python tools/make_demo_data.py cityscapes data/cityscapes
    python tools/make_demo_data.py coco_panoptic data/coco
                                   # panoptic_*2017 beside the instances
    python tools/make_demo_data.py pascal_context data
                                   # data/VOCdevkit/VOC2010/

Cityscapes, as the real one, then needs its training labels:
``python tools/convert_cityscapes.py data/cityscapes``.
"""
import argparse
import time

from resnest_tools.demo_data import (make_ade20k_scenes,
                                     make_cityscapes_scenes,
                                     make_coco_panoptic_shapes,
                                     make_coco_shapes,
                                     make_pascal_context_scenes)

GENERATORS = {
    'coco': make_coco_shapes,
    'ade20k': make_ade20k_scenes,
    'cityscapes': make_cityscapes_scenes,
    'coco_panoptic': make_coco_panoptic_shapes,
    'pascal_context': make_pascal_context_scenes
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'layout', choices=sorted(GENERATORS), help='dataset layout')
    parser.add_argument('root', help='output folder, e.g. data/coco')
    parser.add_argument('--num-train', type=int, default=240)
    parser.add_argument('--num-val', type=int, default=60)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    written = GENERATORS[args.layout](
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed)
    print(f'{args.layout} demo data in {args.root} '
          f'({time.perf_counter() - start:.1f}s):')
    for split, path in written.items():
        print(f'  {split}: {path}')


if __name__ == '__main__':
    main()
