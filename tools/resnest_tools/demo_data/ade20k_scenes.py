"""A small ADE20K-layout segmentation dataset of textured indoor and outdoor
scenes.

Each scene is a sky or wall above a horizon, road, grass or floor below it,
and a few buildings, trees, people, cars or unlabelled things in front; every
class has its own colour and texture (:func:`~.regions.paint`).

Layout (as ``ADEChallengeData2016.zip``)::

    ROOT/ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...
    ROOT/ADEChallengeData2016/annotations/training/ADE_train_00000001.png ...
    ROOT/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...
    ROOT/ADEChallengeData2016/annotations/validation/ADE_val_00000001.png ...

Annotations hold ADE20K's values: 1..150 are the classes (the order of
mmseg's ``ADE20KDataset``), 0 is "other", which ``reduce_zero_label`` ignores.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .regions import ngon, paint

#: the classes drawn, with their ADE20K values (1 + index in ADE20KDataset's
#: classes)
CLASSES = {
    'wall': 1,
    'building': 2,
    'sky': 3,
    'floor': 4,
    'tree': 5,
    'road': 7,
    'grass': 10,
    'person': 13,
    'car': 21
}
OTHER = 0
SPLITS = {
    'training': ('ADE_train', 0),
    'validation': ('ADE_val', 1)
}  # prefix, seed offset


def make_ade20k_scenes(root,
                       num_train=240,
                       num_val=60,
                       image_size=(128, 128),
                       seed=0):
    """Write the dataset under ``root/ADEChallengeData2016``; return
    ``{split: annotation folder}``.

    ``image_size`` is (width, height). Re-running with the same arguments
    rewrites identical files.
    """
    if min(image_size) < 32:
        raise ValueError(
            f'image_size must be at least 32x32, got {image_size}')
    base = Path(root) / 'ADEChallengeData2016'
    folders = {}
    for split, num in (('training', num_train), ('validation', num_val)):
        prefix, offset = SPLITS[split]
        rng = np.random.default_rng([seed, offset])
        images, annotations = (base / 'images' / split,
                               base / 'annotations' / split)
        images.mkdir(parents=True, exist_ok=True)
        annotations.mkdir(parents=True, exist_ok=True)
        for index in range(1, num + 1):
            labels = draw_scene_labels(rng, image_size)
            name = f'{prefix}_{index:08d}'
            paint(np.asarray(labels), rng).save(
                images / f'{name}.jpg', quality=95)
            labels.save(annotations / f'{name}.png')
        folders[split] = str(annotations)
    return folders


def draw_scene_labels(rng, size):
    """One scene's label map, an 'L' image of ADE20K values."""
    width, height = size
    outdoor = rng.random() < 0.6
    above, below = ('sky',
                    rng.choice(['road', 'grass'])) if outdoor else ('wall',
                                                                    'floor')
    horizon = rng.uniform(0.3, 0.6) * height
    labels = Image.new('L', size, CLASSES[above])
    draw = ImageDraw.Draw(labels)
    draw.rectangle([0, horizon, width, height], fill=CLASSES[below])
    things = ['building', 'tree', 'person', 'car'
              ] if outdoor else ['person', 'person']
    for _ in range(int(rng.integers(1, 5))):
        thing = rng.choice(things + [None])  # None: an unlabelled thing
        x = rng.uniform(0, width)
        if thing == 'building':  # stands on the horizon
            w, h = rng.uniform(0.15, 0.4) * width, rng.uniform(0.2,
                                                               0.9) * horizon
            draw.rectangle([x, horizon - h, x + w, horizon],
                           fill=CLASSES[thing])
        elif thing in ('person',
                       'car'):  # stands on the ground, larger when nearer
            y = rng.uniform(horizon, height)
            scale = 0.1 + 0.3 * (y - horizon) / (height - horizon)
            w, h = (0.3, 1.0) if thing == 'person' else (1.0, 0.5)
            w, h = w * scale * height, h * scale * height
            draw.rectangle([x - w / 2, y - h, x + w / 2, y],
                           fill=CLASSES[thing])
        else:
            r = rng.uniform(0.08, 0.2) * min(size)
            y = rng.uniform(0, horizon) if thing == 'tree' else rng.uniform(
                0, height)
            draw.polygon(
                ngon(rng, x, y, r, r * rng.uniform(0.7, 1.3),
                     int(rng.integers(3, 9))),
                fill=CLASSES['tree'] if thing == 'tree' else OTHER)
    return labels
