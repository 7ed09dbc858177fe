"""The shapes dataset (:mod:`.coco_shapes`) in COCO's panoptic layout.

The same images and objects, as panoptic segments: each shape a "thing"
segment of its class, everything else one "stuff" segment, ``background``.
Segment maps are the shapes' polygons rasterised, so they match the images'
drawn objects pixel for pixel. The instance annotations stay beside them, as
in COCO.

Layout (as COCO 2017 panoptic, what mmdet's ``CocoPanopticDataset`` reads)::

    ROOT/annotations/panoptic_{train,val}2017.json
    ROOT/annotations/panoptic_{train,val}2017/000000000001.png ...
    ROOT/annotations/instances_{train,val}2017.json
    ROOT/{train,val}2017/000000000001.jpg ...

A PNG stores segment id ``R + 256 * G + 256**2 * B`` per pixel (0: void);
``segments_info`` gives each id's category, area and box.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .coco_shapes import CLASSES, make_coco_shapes

STUFF_CLASSES = ('background', )
#: the background's segment id: any id no object has (objects: 1, 2, ...)
BACKGROUND_ID = 256**3 - 1


def make_coco_panoptic_shapes(root,
                              num_train=240,
                              num_val=60,
                              image_size=(160, 160),
                              seed=0):
    """Write the dataset under ``root``; return ``{split: panoptic json}``.

    Re-running with the same arguments rewrites identical files.
    """
    root = Path(root)
    instance_files = make_coco_shapes(root, num_train, num_val, image_size,
                                      seed)
    categories = [
        dict(id=i + 1, name=name, supercategory='shape', isthing=1)
        for i, name in enumerate(CLASSES)
    ] + [
        dict(
            id=len(CLASSES) + i + 1,
            name=name,
            supercategory='stuff',
            isthing=0) for i, name in enumerate(STUFF_CLASSES)
    ]
    ann_files = {}
    for split, instance_file in instance_files.items():
        coco = json.loads(Path(instance_file).read_text())
        seg_dir = root / 'annotations' / f'panoptic_{split}'
        seg_dir.mkdir(exist_ok=True)
        objects = {}
        for ann in coco['annotations']:
            objects.setdefault(ann['image_id'], []).append(ann)
        annotations = []
        for image in coco['images']:
            ids, segments = _rasterise(image, objects.get(image['id'], []))
            file_name = image['file_name'].replace('.jpg', '.png')
            Image.fromarray(_id2rgb(ids)).save(seg_dir / file_name)
            annotations.append(
                dict(
                    image_id=image['id'],
                    file_name=file_name,
                    segments_info=segments))
        ann_file = root / 'annotations' / f'panoptic_{split}.json'
        ann_file.write_text(
            json.dumps(
                dict(
                    info=coco['info'],
                    licenses=[],
                    images=coco['images'],
                    annotations=annotations,
                    categories=categories)))
        ann_files[split] = str(ann_file)
    return ann_files


def _rasterise(image, objects):
    """An ``(H, W)`` segment-id map of one image and its ``segments_info``."""
    canvas = Image.new('I', (image['width'], image['height']), BACKGROUND_ID)
    draw = ImageDraw.Draw(canvas)
    for ann in objects:  # drawn with outline, as coco_shapes draws them
        polygon = ann['segmentation'][0]
        draw.polygon(polygon, fill=ann['id'], outline=ann['id'])
    ids = np.asarray(canvas, dtype=np.int64)
    categories = [(ann['id'], ann['category_id']) for ann in objects]
    categories.append((BACKGROUND_ID, len(CLASSES) + 1))
    segments = []
    for segment_id, category_id in categories:
        ys, xs = np.nonzero(ids == segment_id)
        if len(xs):
            x0, y0 = int(xs.min()), int(ys.min())
            segments.append(
                dict(
                    id=segment_id,
                    category_id=category_id,
                    area=len(xs),
                    bbox=[
                        x0, y0,
                        int(xs.max()) - x0 + 1,
                        int(ys.max()) - y0 + 1
                    ],
                    iscrowd=0))
    return ids, segments


def _id2rgb(ids):
    """Segment ids ``(H, W)`` as COCO's RGB encoding ``(H, W, 3)`` uint8."""
    return np.stack([(ids >> shift) & 255 for shift in (0, 8, 16)],
                    axis=-1).astype(np.uint8)
