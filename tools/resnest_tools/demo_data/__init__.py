"""Deterministic generators of small demo datasets in the exact public
layouts."""
from .ade20k_scenes import make_ade20k_scenes
from .cityscapes_scenes import make_cityscapes_scenes
from .coco_panoptic_shapes import make_coco_panoptic_shapes
from .coco_shapes import make_coco_shapes
from .pascal_context_scenes import make_pascal_context_scenes

__all__ = [
    'make_ade20k_scenes', 'make_cityscapes_scenes', 'make_coco_shapes',
    'make_coco_panoptic_shapes', 'make_pascal_context_scenes'
]
