"""Make Cityscapes' training labels, *_gtFine_labelTrainIds.png (19 classes,
255 ignored).

    python tools/convert_cityscapes.py data/cityscapes [--gt-dir gtFine]
                                       [--nproc 8]

Each annotated frame under ROOT/gtFine is drawn from its *_gtFine_polygons.json
with the official cityscapesscripts (as mmseg's converter does), or, where a
frame has only its *_gtFine_labelIds.png, mapped from that through the official
label table. A label file newer than its source is kept, and each is written
under a temporary name first, so the tool can be run again at any time (after
an interruption, or after adding files). Files it could not convert are listed
at the end, and the exit status is then 1. mmseg 1.x finds the frames by
listing the folders, so no split lists are written.
"""
import argparse
import contextlib
import io
import os
import os.path as osp
import sys

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import labels as LABELS
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from mmengine.utils import scandir, track_parallel_progress, track_progress
from PIL import Image

SOURCES = ('_gtFine_polygons.json', '_gtFine_labelIds.png')  # by preference
TARGET = '_gtFine_labelTrainIds.png'
KNOWN_IDS = {label.id
             for label in LABELS
             if label.id >= 0}  # -1: license plate, never drawn
#: label id -> train id (0..18, or 255 where not evaluated); other ids are
#: refused
ID_TO_TRAIN_ID = np.full(256, 255, np.uint8)
ID_TO_TRAIN_ID[[label.id for label in LABELS if label.id in KNOWN_IDS]] = [
    label.trainId for label in LABELS if label.id in KNOWN_IDS
]


def find_frames(gt_dir):
    """``{frame path without suffix: its preferred source file}`` under
    ``gt_dir``."""
    frames = {}
    # the preferred source is seen last and wins
    for suffix in reversed(SOURCES):
        for path in scandir(gt_dir, suffix, recursive=True):
            frames[osp.join(gt_dir,
                            path[:-len(suffix)])] = osp.join(gt_dir, path)
    return frames


def convert_frame(frame_and_source):
    """Write one frame's label file; return
    ``(source, 'converted' | 'up to date' | error)``."""
    frame, source = frame_and_source
    target = frame + TARGET
    if osp.exists(target) and osp.getmtime(target) >= osp.getmtime(source):
        return source, 'up to date'
    try:
        if source.endswith('.json'):
            train_ids = _draw_polygons(source)
        else:
            label_ids = np.asarray(Image.open(source))
            unknown = sorted(set(np.unique(label_ids).tolist()) - KNOWN_IDS)
            if label_ids.ndim != 2 or unknown:
                raise ValueError(
                    f'not a label id image: shape {label_ids.shape}, '
                    f'values outside the label table {unknown[:10]}')
            train_ids = Image.fromarray(ID_TO_TRAIN_ID[label_ids])
        # a killed run leaves no truncated label file
        partial = target + '.partial'
        train_ids.save(partial, format='PNG')
        os.replace(partial, target)
    except Exception as err:  # noqa: BLE001
        # (reported per file; the others go on)
        return source, f'{type(err).__name__}: {err}'
    return source, 'converted'


def _draw_polygons(source):
    annotation = Annotation()
    with open(source) as f:
        annotation.fromJsonText(f.read())
    # createLabelImage prints "ERROR: Label 'x' not known." and exits on an
    # unknown label
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            return createLabelImage(annotation, 'trainIds')
        except SystemExit:
            message = printed.getvalue().strip().splitlines()
            raise ValueError(message[0].removeprefix('ERROR: ') if message else
                             'cityscapesscripts exited') from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'root', help='the Cityscapes folder (with gtFine/ and leftImg8bit/)')
    parser.add_argument(
        '--gt-dir', default='gtFine', help='annotation folder under root')
    parser.add_argument(
        '--nproc', type=int, default=1, help='worker processes')
    args = parser.parse_args()
    gt_dir = osp.join(args.root, args.gt_dir)
    if not osp.isdir(gt_dir):
        sys.exit(
            f'{gt_dir} not found: download gtFine_trainvaltest.zip from '
            'https://www.cityscapes-dataset.com/downloads/ and unzip it into '
            f'{args.root}, or make demo data with: '
            'python tools/make_demo_data.py '
            f'cityscapes {args.root}')
    frames = sorted(find_frames(gt_dir).items())
    if not frames:
        sys.exit(f'no *{SOURCES[0]} or *{SOURCES[1]} under {gt_dir}: '
                 'is it the gtFine folder '
                 'of gtFine_trainvaltest.zip?')
    print(f'{len(frames)} frames under {gt_dir}')
    if args.nproc > 1:
        results = track_parallel_progress(convert_frame, frames, args.nproc)
    else:
        results = track_progress(convert_frame, frames)
    failed = [(source, status) for source, status in results
              if status not in ('converted', 'up to date')]
    counts = {
        s: sum(status == s for _, status in results)
        for s in ('converted', 'up to date')
    }
    print(f"\n{counts['converted']} converted, "
          f"{counts['up to date']} up to date, "
          f'{len(failed)} failed')
    for source, error in failed:
        print(f'could not convert {source}: {error}', file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
