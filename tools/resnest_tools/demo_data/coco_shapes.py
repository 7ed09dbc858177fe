"""A small COCO-layout detection dataset of coloured shapes on textured
backgrounds.

Objects are things a detector learns in minutes on a CPU from scratch, yet
not trivially: each class (circle, square, triangle) comes in any size and
rotation and in a hue range of its own (reds, greens, blues: class-typical
colour, as stop signs are red), on a background of random stripes and
blotches of any hue. Objects never overlap, so each polygon is that object's
exact mask.

Layout (as COCO 2017)::

    ROOT/annotations/instances_train2017.json
    ROOT/annotations/instances_val2017.json
    ROOT/train2017/000000000001.jpg ...
    ROOT/val2017/...
"""
import colorsys
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ('circle', 'square', 'triangle')
SPLITS = {'train2017': 0, 'val2017': 1}  # split -> seed offset


def make_coco_shapes(root,
                     num_train=240,
                     num_val=60,
                     image_size=(160, 160),
                     seed=0):
    """Write the dataset under ``root``; return ``{split: annotation file}``.

    Re-running with the same arguments rewrites identical files.
    """
    if min(image_size) < 64:
        raise ValueError(
            f'image_size must be at least 64x64 (objects are 16 px or '
            f'more in radius), got {image_size}')
    root = Path(root)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    ann_files = {}
    for split, num in (('train2017', num_train), ('val2017', num_val)):
        rng = np.random.default_rng([seed, SPLITS[split]])
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, num + 1):
            file_name = f'{image_id:012d}.jpg'
            image, objects = _draw_image(rng, image_size)
            image.save(root / split / file_name, quality=95)
            images.append(
                dict(
                    id=image_id,
                    file_name=file_name,
                    width=image_size[0],
                    height=image_size[1]))
            for category_id, polygon in objects:
                xs, ys = polygon[0::2], polygon[1::2]
                x0, y0 = min(xs), min(ys)
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=image_id,
                        category_id=category_id,
                        segmentation=[polygon],
                        area=_polygon_area(xs, ys),
                        iscrowd=0,
                        bbox=[x0, y0, max(xs) - x0,
                              max(ys) - y0]))
        ann_file = root / 'annotations' / f'instances_{split}.json'
        ann_file.write_text(
            json.dumps(
                dict(
                    info=dict(
                        description='resnest-mm demo shapes', version='1.0'),
                    licenses=[],
                    images=images,
                    annotations=annotations,
                    categories=[
                        dict(id=i + 1, name=n, supercategory='shape')
                        for i, n in enumerate(CLASSES)
                    ])))
        ann_files[split] = str(ann_file)
    return ann_files


def _draw_image(rng, size):
    """One textured image with 1 to 3 non-overlapping shapes: (PIL image,
    [(category, polygon)])."""
    width, height = size
    base = rng.integers(60, 196, 3)
    texture = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1, 3)) * 30
    texture = np.kron(texture, np.ones((8, 8, 1)))[:height, :width]  # blotches
    yy, xx = np.mgrid[:height, :width]
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 24)
    stripes = 25 * np.sin(
        (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    pixels = np.clip(base + texture + stripes[..., None], 0,
                     255).astype(np.uint8)
    image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5))
    draw = ImageDraw.Draw(image)

    # discs: (cx, cy, r) bounding circles already placed
    objects, discs = [], []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            r = float(rng.uniform(16, min(width, height) / 3.2))
            cx, cy = rng.uniform(r + 1, width - r - 1), rng.uniform(
                r + 1, height - r - 1)
            if all(
                    math.hypot(cx - x, cy - y) > r + rr + 2
                    for x, y, rr in discs):
                break
        else:
            continue
        discs.append((cx, cy, r))
        category = int(rng.integers(len(CLASSES)))
        corners = (32, 4, 3)[category]  # a circle is a 32-gon
        start = rng.uniform(0, 2 * math.pi)
        polygon = []
        for k in range(corners):
            a = start + 2 * math.pi * k / corners
            polygon += [
                round(cx + r * math.cos(a), 2),
                round(cy + r * math.sin(a), 2)
            ]
        hue = (category / len(CLASSES) + rng.uniform(-0.14, 0.14)) % 1.0
        colour = tuple(
            round(255 * c) for c in colorsys.hsv_to_rgb(
                hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)))
        draw.polygon(
            polygon, fill=colour, outline=tuple(255 - c for c in colour))
        objects.append((category + 1, polygon))
    return image, objects


def _polygon_area(xs, ys):
    """Shoelace formula."""
    return round(
        abs(
            sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i]
                for i in range(len(xs)))) / 2, 2)
