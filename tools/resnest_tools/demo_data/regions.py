"""What the segmentation generators share: polygons, and painting label maps as
images."""
import math

import numpy as np
from PIL import Image, ImageFilter


def ngon(rng, cx, cy, rx, ry, corners):
    """A convex polygon ``[(x, y), ...]`` of ``corners`` points on an ellipse,
    randomly rotated."""
    start = rng.uniform(0, 2 * math.pi)
    return [(cx + rx * math.cos(start + 2 * math.pi * k / corners),
             cy + ry * math.sin(start + 2 * math.pi * k / corners))
            for k in range(corners)]


def paint(labels, rng, look_seed=0):
    """Paint an ``(H, W)`` integer label map as an RGB image (PIL) of the same
    size.

    Each label value looks alike in every image (a colour and a stripe texture
    drawn from ``look_seed`` and the value), and ``rng`` varies it per image
    (tint, stripe phase, noise): a network has to learn colour and texture
    together, yet learns them in minutes. Edges are softened as in photos.
    """
    height, width = labels.shape
    yy, xx = np.mgrid[:height, :width]
    image = np.zeros((height, width, 3))
    for value in np.unique(labels):
        look = np.random.default_rng([look_seed, int(value)])
        colour = look.uniform(30, 225, 3)
        angle, period = look.uniform(0, math.pi), look.uniform(3, 12)
        phase = (xx * math.cos(angle) +
                 yy * math.sin(angle)) * 2 * math.pi / period
        stripes = look.uniform(
            5, 30) * np.sin(phase + rng.uniform(0, 2 * math.pi))
        mask = labels == value
        image[mask] = colour + rng.normal(0, 12, 3) + stripes[mask, None]
    image += rng.normal(0, 6, image.shape)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.7))
