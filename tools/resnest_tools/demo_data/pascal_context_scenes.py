"""A small Pascal Context (59 classes) dataset in the layout mmseg's
conversion writes, with the ADE20K demo's scenes.

The scenes are :func:`~.ade20k_scenes.draw_scene_labels`'s, relabelled with
the Pascal Context values of the same classes (all nine drawn classes are
among the 59).

Layout (``VOCtrainval_03-May-2010.tar`` unpacked, then mmseg's
``tools/dataset_converters/pascal_context.py`` run on it)::

    ROOT/VOCdevkit/VOC2010/JPEGImages/2008_000001.jpg ...
    ROOT/VOCdevkit/VOC2010/SegmentationClassContext/2008_000001.png ...
    ROOT/VOCdevkit/VOC2010/ImageSets/SegmentationContext/train.txt, val.txt

Annotations hold the converted values: 1..59 are the classes (the order of
mmseg's ``PascalContextDataset59``), 0 is background, which
``reduce_zero_label`` ignores.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from .ade20k_scenes import CLASSES as ADE20K_CLASSES
from .ade20k_scenes import draw_scene_labels
from .regions import paint

#: the classes drawn, with their Pascal Context values (1 + index in
#: PascalContextDataset59's classes)
CLASSES = {
    'building': 11,
    'car': 14,
    'floor': 26,
    'grass': 29,
    'person': 37,
    'road': 41,
    'sky': 47,
    'tree': 53,
    'wall': 56
}
BACKGROUND = 0
#: ADE20K value -> Pascal Context value ("other" -> background)
ADE20K_TO_CONTEXT = np.full(256, BACKGROUND, np.uint8)
ADE20K_TO_CONTEXT[[ADE20K_CLASSES[c]
                   for c in CLASSES]] = list(CLASSES.values())
SPLITS = {'train': ('2008', 0), 'val': ('2009', 1)}  # name year, seed offset


def make_pascal_context_scenes(root,
                               num_train=240,
                               num_val=60,
                               image_size=(128, 128),
                               seed=0):
    """Write the dataset under ``root/VOCdevkit/VOC2010``; return
    ``{split: split list}``.

    ``image_size`` is (width, height). Re-running with the same arguments
    rewrites identical files.
    """
    if min(image_size) < 32:
        raise ValueError(
            f'image_size must be at least 32x32, got {image_size}')
    base = Path(root) / 'VOCdevkit' / 'VOC2010'
    images, annotations = (base / 'JPEGImages',
                           base / 'SegmentationClassContext')
    lists = base / 'ImageSets' / 'SegmentationContext'
    for folder in (images, annotations, lists):
        folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, num in (('train', num_train), ('val', num_val)):
        year, offset = SPLITS[split]
        rng = np.random.default_rng([seed, offset])
        names = [f'{year}_{index:06d}' for index in range(1, num + 1)]
        for name in names:
            labels = ADE20K_TO_CONTEXT[np.asarray(
                draw_scene_labels(rng, image_size))]
            paint(labels, rng).save(images / f'{name}.jpg', quality=95)
            Image.fromarray(labels).save(annotations / f'{name}.png')
        split_list = lists / f'{split}.txt'
        split_list.write_text(''.join(f'{name}\n' for name in names))
        written[split] = str(split_list)
    return written
