"""Run a trained detector on one image and save the picture with its boxes and
masks.

    python tools/infer_demo.py IMAGE CONFIG CHECKPOINT [--out result.jpg]
                               [--score-thr 0.3] [--device cpu]
"""
import argparse
import os.path as osp

import mmcv
from mmdet.apis import inference_detector, init_detector
from mmdet.registry import VISUALIZERS

import resnest_mm  # noqa: F401  (registers ResNeSt; safe checkpoint loading)
from resnest_mm.tooling.runner_setup import load_config, task_of


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('image')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', default='result.jpg', help='output picture')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    for path in (args.image, args.checkpoint):
        if not osp.isfile(path):
            raise FileNotFoundError(f'not found: {path}')
    cfg = load_config(args.config)
    if task_of(cfg) != 'detection':
        raise ValueError(f'{args.config} is not a detection config')

    model = init_detector(cfg, args.checkpoint, device=args.device)
    result = inference_detector(model, args.image)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    image = mmcv.imconvert(mmcv.imread(args.image), 'bgr', 'rgb')
    visualizer.add_datasample(
        'result',
        image,
        data_sample=result,
        draw_gt=False,
        pred_score_thr=args.score_thr,
        out_file=args.out)
    kept = int((result.pred_instances.scores >= args.score_thr).sum())
    print(f'{kept} objects above score {args.score_thr}: {args.out}')


if __name__ == '__main__':
    main()
