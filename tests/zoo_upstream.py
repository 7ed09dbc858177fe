"""Run by test_model_zoo.py in a process of its own, not by pytest.

    python zoo_upstream.py OUT_DIR [CONFIG_NAME ...]

Builds every model (or those named) of mmdet's and mmseg's ResNeSt zoos from
their installed configs (``.mim/configs/resnest/*.py``) with upstream's own
classes: this process never imports ``resnest_mm``, so the registries hold
upstream's ``ResNeSt``. Each model gets random weights and is written as
mmengine writes a checkpoint (``meta`` and ``state_dict``) to
``OUT_DIR/<config>.pth``, with the tiny input and its outputs
(:func:`zoo_outputs`) in ``OUT_DIR/<config>.outputs.pth``. test_stacks.py
runs it too, in each stack, for one model of each zoo.
"""
import ast
import importlib
import os
import re
import sys
from pathlib import Path

import torch

from helpers import ROOT, images, randomize_

SCOPES = ('mmdet', 'mmseg')
#: where our configs of each scope are, under configs/
OUR_FOLDERS = {'mmdet': 'detection', 'mmseg': 'segmentation'}
# A tiny image: every stride of the detectors (up to 64) and of the dilated
# segmentors (8) still leaves a feature map.
INPUT_SHAPE = (1, 3, 32, 32)
# Fixed proposals, so that the RoI heads see the same boxes in both models
# (the RPN's top-k and NMS would pick among near-equal random scores).
PROPOSALS = torch.tensor([[0., 0., 16., 16.], [4., 4., 28., 24.],
                          [8., 0., 32., 32.], [2., 10., 20., 30.]])


def upstream_configs(scope):
    """``{config name: path}`` of the ResNeSt configs ``scope`` ships."""
    package = importlib.import_module(scope)
    folder = Path(package.__file__).parent / '.mim/configs/resnest'
    return {path.stem: path for path in sorted(folder.glob('*.py'))}


def our_configs(scope):
    """``{upstream config name: our config}``, from each of our configs'
    ``_base_`` (``'mmdet::resnest/<name>.py'``; one base or a list)."""
    pairs = {}
    for path in sorted((ROOT / 'configs' / OUR_FOLDERS[scope]).glob('*.py')):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign)
                    and node.targets[0].id == '_base_'):
                bases = ast.literal_eval(node.value)
                for base in ([bases] if isinstance(bases, str) else bases):
                    match = re.fullmatch(rf'{scope}::resnest/(.*)\.py', base)
                    if match:
                        pairs[match.group(1)] = path
    return pairs


def build_model(scope, config):
    """The model of ``config`` (an mmengine Config) in ``scope``'s registry,
    with plain BN (SyncBN needs a process group; the state dict is the
    same) and no pretrained weights."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope
    config.model.pop('pretrained', None)
    config.model.backbone.init_cfg = None
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(config.model)
    return revert_sync_batchnorm(model).eval()


def zoo_outputs(model, x):
    """Every tensor ``model`` computes for ``x`` before post-processing.

    Detectors: the neck's levels, the RPN's maps and the RoI heads' outputs
    on :data:`PROPOSALS`; segmentors: the backbone's stages and the decode
    and auxiliary heads' logits.
    """
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    with torch.no_grad():
        features = model.extract_feat(x)
        if hasattr(model, 'rpn_head'):
            shape = tuple(x.shape[-2:])
            sample = DetDataSample(
                metainfo=dict(
                    img_shape=shape,
                    ori_shape=shape,
                    pad_shape=shape,
                    batch_input_shape=shape,
                    scale_factor=(1.0, 1.0)))
            heads = (model.rpn_head(features),
                     model.roi_head.forward(features,
                                            [InstanceData(bboxes=PROPOSALS)],
                                            [sample]))
        else:
            heads = (model.decode_head(features),
                     model.auxiliary_head(features))
    return [*features, *_tensors(heads)]


def _tensors(nested):
    """The tensors in nested tuples and lists, in order."""
    if isinstance(nested, torch.Tensor):
        return [nested]
    return [t for item in nested for t in _tensors(item)]


def main(out_dir, names=()):
    import mmengine
    from mmengine.config import Config
    from mmengine.runner.checkpoint import get_state_dict, save_checkpoint
    x = images(INPUT_SHAPE, torch.Generator().manual_seed(0))
    for scope in SCOPES:
        for name, path in upstream_configs(scope).items():
            if names and name not in names:
                continue
            print(f'{scope}: {name}', flush=True)
            model = build_model(scope, Config.fromfile(path))
            assert type(model.backbone).__module__ == (
                f'{scope}.models.backbones.resnest'), type(model.backbone)
            randomize_(model, calibrate_on=None, norms_only=True)
            save_checkpoint(
                dict(
                    meta=dict(
                        mmengine_version=mmengine.__version__,
                        config=str(path)),
                    state_dict=get_state_dict(model)),
                os.path.join(out_dir, f'{name}.pth'))
            torch.save(
                dict(input=x, outputs=zoo_outputs(model, x)),
                os.path.join(out_dir, f'{name}.outputs.pth'))
    assert 'resnest_mm' not in sys.modules


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2:])
