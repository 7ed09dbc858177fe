"""Test-time augmentation for tools/test.py ``--tta``, as mmdet's and mmseg's
own test tools do it.

The config's ``tta_model`` (mmdet's ``DetTTAModel``, mmseg's ``SegTTAModel``)
wraps its model, and the test pipeline becomes its ``tta_pipeline``: a
``TestTimeAug`` whose groups of alternatives (scales, flips) multiply into
the views of each image; the wrapper merges the views' predictions (boxes by
NMS, label maps by averaging class probabilities).
"""
import math

from mmengine.config import ConfigDict


def use_tta(cfg, path='the config'):
    """Wrap ``cfg.model`` in ``cfg.tta_model`` and test on
    ``cfg.tta_pipeline``.

    Raises early, naming the fix, where the config has no TTA settings or
    where mmdet cannot merge its predictions (instance masks). Returns a
    one-line description of the views (:func:`describe_tta`).
    """
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise ValueError(
            f'--tta: {path} has no {" and no ".join(missing)}. Inherit them: '
            "detection configs from 'mmdet::retinanet/retinanet_tta.py' (as "
            'configs/detection/*.py do), segmentation configs from mmseg\'s '
            'dataset and default_runtime bases.')
    if _has_key(cfg.model, 'mask_head'):
        # mmdet 3.3's DetTTAModel asserts "TTA of instance segmentation does
        # not support now" on the first merged batch; say so before testing.
        raise ValueError(
            f'--tta: {path} predicts instance masks, and mmdet\'s DetTTAModel '
            'merges boxes only. Test it without --tta, or get box AP under '
            'TTA without the mask head: --cfg-options '
            'model.roi_head.mask_head=None test_evaluator.metric=bbox')
    description = describe_tta(cfg.tta_pipeline)
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return f'{cfg.tta_model.type} merges {description}'


def describe_tta(pipeline):
    """Name the scales and flips of a ``TestTimeAug`` pipeline, e.g.
    ``'12 views per image: scales (factor 0.5, factor 1.0, ...) x flips
    (none, horizontal)'``."""
    tta = [t for t in pipeline if t.get('type') == 'TestTimeAug']
    if len(tta) != 1:
        raise ValueError('--tta: tta_pipeline must hold one TestTimeAug '
                         f'transform, got {[t.get("type") for t in pipeline]}')
    groups = tta[0]['transforms']
    parts = []
    for group in groups:
        kinds = {t['type'] for t in group}
        if kinds == {'Resize'}:
            parts.append('scales (' + ', '.join(map(_scale, group)) + ')')
        elif kinds == {'RandomFlip'}:
            parts.append('flips (' + ', '.join(map(_flip, group)) + ')')
    views = math.prod(len(group) for group in groups)
    return f'{views} views per image: ' + ' x '.join(parts or ['no changes'])


def _scale(resize):
    if resize.get('scale_factor') is not None:
        return f'factor {resize["scale_factor"]}'
    return str(tuple(resize['scale']))


def _flip(flip):
    if flip.get('prob', 0) == 0:
        return 'none'
    return str(flip.get('direction', 'horizontal'))


def _has_key(node, key):
    if isinstance(node, dict):
        return key in node and node[key] is not None or any(
            _has_key(v, key) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_has_key(v, key) for v in node)
    return False
