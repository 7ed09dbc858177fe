"""A small Cityscapes-layout dataset of textured street scenes, annotated as
Cityscapes is.

Each frame is a street seen from a car: sky, buildings and trees above the
horizon, a road between sidewalks below it, poles with traffic signs, cars,
people and the ego vehicle's bonnet. Its annotation is a list of labelled
polygons in drawing order, with label names from the official table
(``cityscapesscripts.helpers.labels``), including what the conversion to
train ids must handle: labels without a train id (``ego vehicle``, 255),
a ``cargroup`` (drawn as ``car``) and a ``license plate`` (id -1, not drawn).

Layout (as ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``)::

    ROOT/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png ...
    ROOT/gtFine/train/aachen/aachen_000000_000019_gtFine_polygons.json
    ROOT/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png
    ROOT/leftImg8bit/val/frankfurt/... ROOT/gtFine/val/frankfurt/...

``*_gtFine_labelIds.png`` is drawn from the polygons by the official
``createLabelImage``, as the published files were. Training needs
``*_gtFine_labelTrainIds.png``: ``tools/convert_cityscapes.py ROOT`` makes
them, as for the real dataset.
"""
import json
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2labelImg import createLabelImage

from .regions import ngon, paint

CITIES = {'train': ('aachen', 'bremen'), 'val': ('frankfurt', )}
SPLITS = {'train': 0, 'val': 1}  # split -> seed offset
FRAME = 19  # the annotated frame of each 30-frame Cityscapes snippet


def make_cityscapes_scenes(root,
                           num_train=240,
                           num_val=60,
                           image_size=(256, 128),
                           seed=0):
    """Write images, polygons and label ids under ``root``; return
    ``{split: annotation folder}``.

    ``image_size`` is (width, height). Re-running with the same arguments
    rewrites identical files.
    """
    if min(image_size) < 32:
        raise ValueError(
            f'image_size must be at least 32x32, got {image_size}')
    root = Path(root)
    folders = {}
    for split, num in (('train', num_train), ('val', num_val)):
        rng = np.random.default_rng([seed, SPLITS[split]])
        for seq in range(num):
            city = CITIES[split][seq % len(CITIES[split])]
            stem = f'{city}_{seq:06d}_{FRAME:06d}'
            images, gt = (root / 'leftImg8bit' / split / city,
                          root / 'gtFine' / split / city)
            images.mkdir(parents=True, exist_ok=True)
            gt.mkdir(parents=True, exist_ok=True)
            polygons = json.dumps(
                dict(
                    imgHeight=image_size[1],
                    imgWidth=image_size[0],
                    objects=_street(rng, image_size)))
            (gt / f'{stem}_gtFine_polygons.json').write_text(polygons)
            annotation = Annotation()
            annotation.fromJsonText(polygons)
            label_ids = createLabelImage(annotation, 'ids')
            label_ids.save(gt / f'{stem}_gtFine_labelIds.png')
            paint(np.asarray(label_ids),
                  rng).save(images / f'{stem}_leftImg8bit.png')
        folders[split] = str(root / 'gtFine' / split)
    return folders


def _street(rng, size):
    """The labelled polygons of one street scene, back to front:
    ``[{label, polygon}]``."""
    width, height = size
    horizon = rng.uniform(0.35, 0.5) * height
    vanish = rng.uniform(0.3, 0.7) * width  # where the road meets the horizon
    bonnet = height - rng.uniform(0.05, 0.12) * height
    objects = []

    def add(label, points):
        objects.append(
            dict(
                label=label,
                polygon=[[round(x), round(y)] for x, y in points]))

    def box(label, x0, y0, x1, y1):
        add(label, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    box('sky', 0, 0, width, horizon)
    for _ in range(int(rng.integers(1, 4))):
        x, w = rng.uniform(0, width), rng.uniform(0.15, 0.4) * width
        box('building', x, horizon - rng.uniform(0.3, 1.0) * horizon, x + w,
            horizon + 1)
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(0.05, 0.12) * width
        add('vegetation',
            ngon(rng, rng.uniform(0, width), horizon - r / 2, r, r * 0.8, 7))
    add('sidewalk', [(0, horizon), (width, horizon), (width, height),
                     (0, height)])
    add('road', [(vanish - 2, horizon), (vanish + 2, horizon),
                 (width * 0.95, height), (width * 0.05, height)])
    # a pole with a sign on the sidewalk's edge
    for _ in range(int(rng.integers(0, 3))):
        x = rng.choice([rng.uniform(0, 0.1), rng.uniform(0.9, 1.0)]) * width
        top = horizon - rng.uniform(0.1, 0.3) * height
        box('pole', x - 1, top, x + 1, rng.uniform(horizon + 4, height))
        add('traffic sign', ngon(rng, x, top, 4, 4, int(rng.integers(3, 5))))
    for _ in range(int(rng.integers(1, 4))):  # on the road, larger when nearer
        y = rng.uniform(horizon + 4, bonnet)
        scale = (y - horizon) / (height - horizon)
        x = vanish + (rng.uniform(0.05, 0.95) * width - vanish) * scale
        w, h = 0.35 * width * scale, 0.2 * height * scale
        box(
            rng.choice(['car', 'car', 'cargroup']), x - w / 2, y - h,
            x + w / 2, y)
        box('license plate', x - w / 8, y - h / 4, x + w / 8, y - h / 8)
    for _ in range(int(rng.integers(0, 3))):  # people on the sidewalk
        y = rng.uniform(horizon + 2, bonnet)
        x = rng.choice([rng.uniform(0, 0.15), rng.uniform(0.85, 1.0)]) * width
        h = 0.3 * height * (y - horizon) / (height - horizon) + 3
        box('person', x - h / 6, y - h, x + h / 6, y)
    box('ego vehicle', 0, bonnet, width, height)
    return objects
