"""Run a trained detector or segmentor on images with mmdet's or mmseg's
inferencer; save the painted images and the predictions.

    python tools/infer_demo.py CONFIG CHECKPOINT INPUT [INPUT ...]
                               [--out-dir outputs] [--device cpu]
                               [--score-thr 0.3] [--batch-size 1]

INPUT: image files or folders of images. The task is read from the config
(its ``default_scope``): a detection config runs ``mmdet.apis.DetInferencer``,
a segmentation config ``mmseg.apis.MMSegInferencer``, each as its package's
``demo/image_demo.py`` does. Under ``--out-dir``:

- detection: ``vis/<image>`` painted with the boxes (and masks) scoring at
  least ``--score-thr``, and ``preds/<image stem>.json`` with every
  prediction (``labels``, ``scores``, ``bboxes`` in input-image pixels;
  ``masks`` as COCO RLE), as the model's ``test_cfg`` keeps them;
- segmentation: ``vis/<image>`` painted with the label map, and
  ``pred/<i>_pred.png``, the label map of the i-th input (counting from
  00000000 in the order listed) as class indices, mmseg's format.

CHECKPOINT is read with resnest_mm's safe loader (it cannot run code, on any
torch), as by tools/test.py.
"""
import argparse
import os.path as osp

from mmengine.utils import scandir

import resnest_mm  # noqa: F401  (registers ResNeSt)
from resnest_mm.safe_load import route_mmengine_loading
from resnest_tools.runner_setup import load_config, task_of

#: what a folder's images may end with (mmdet's and mmcv's readers take these)
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='detection or segmentation config')
    parser.add_argument('checkpoint', help="the config's trained checkpoint")
    parser.add_argument(
        'inputs', nargs='+', help='image files or folders of images')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument(
        '--device', help='e.g. cpu or cuda:0; default: cuda if available')
    parser.add_argument(
        '--score-thr',
        type=float,
        help='detection: paint the boxes scoring at least this (default 0.3)')
    parser.add_argument('--batch-size', type=int, default=1)
    return parser.parse_args()


def image_paths(inputs):
    """Files as given, then each folder's images in sorted order."""
    paths = []
    for path in inputs:
        if osp.isdir(path):
            found = sorted(
                scandir(path, suffix=IMAGE_SUFFIXES, case_sensitive=False))
            if not found:
                raise FileNotFoundError(
                    f'no images ({", ".join(IMAGE_SUFFIXES)}) in {path}')
            paths += [osp.join(path, name) for name in found]
        elif osp.isfile(path):
            paths.append(path)
        else:
            raise FileNotFoundError(f'image or folder not found: {path}')
    return paths


def main():
    args = parse_args()
    cfg = load_config(args.config)  # names a missing or scope-less config
    task = task_of(cfg)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    if task == 'segmentation' and args.score_thr is not None:
        raise ValueError('--score-thr is for detection; a segmentor paints '
                         'every pixel with its class')
    images = image_paths(args.inputs)
    route_mmengine_loading()  # the inferencers load through mmengine
    if task == 'detection':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(
            cfg, args.checkpoint, args.device, show_progress=False)
        inferencer(
            images,
            batch_size=args.batch_size,
            out_dir=args.out_dir,
            no_save_pred=False,
            pred_score_thr=0.3 if args.score_thr is None else args.score_thr)
        saved = 'vis/ and preds/*.json'
    else:
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(cfg, args.checkpoint, device=args.device)
        inferencer(images, batch_size=args.batch_size, out_dir=args.out_dir)
        saved = 'vis/ and pred/*_pred.png (label maps)'
    print(f'{len(images)} images: {saved} under {args.out_dir}')


if __name__ == '__main__':
    main()
