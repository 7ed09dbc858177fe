"""Every detection config builds our backbone and runs a loss and a predict
forward."""
import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmcv.ops import ModulatedDeformConv2dPack
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import resnest_mm
from resnest_tools.runner_setup import build_model
from helpers import images

CONFIG_DIR = Path(__file__).parents[1] / 'configs/detection'
CONFIGS = sorted(CONFIG_DIR.glob('**/*.py'))
# DCNv2 config -> the recipe it extends
DCN_CONFIGS = {
    'faster-rcnn_s50-mdconv-group2-c3-c5_fpn_syncbn-backbone+head_'
    'ms-range-1x_coco.py':
    'faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py',
    'cascade-mask-rcnn_s101-mdconv-group2-c3-c5_fpn_syncbn-backbone+head_'
    'ms-1x_coco.py':
    'cascade-mask-rcnn_s101_fpn_syncbn-backbone+head_ms-1x_coco.py',
    'cascade-mask-rcnn_s200-mdconv-group2-c3-c5_fpn_syncbn-backbone+neck+head_'
    'all-tricks-3x_coco.py':
    'cascade-mask-rcnn_s200_fpn_syncbn-backbone+neck+head_'
    'all-tricks-3x_coco.py',
}


def test_the_eight_reference_configs_are_there():
    names = {p.name for p in CONFIGS}
    for model, ms in (('faster-rcnn', 'ms-range'), ('mask-rcnn', 'ms'),
                      ('cascade-rcnn', 'ms-range'), ('cascade-mask-rcnn',
                                                     'ms')):
        for depth in (50, 101):
            assert (f'{model}_s{depth}_fpn_syncbn-backbone+head_'
                    f'{ms}-1x_coco.py' in names)


@pytest.mark.parametrize('name', DCN_CONFIGS, ids=lambda n: n.split('_fpn')[0])
def test_dcn_configs_only_add_dcnv2_to_stages_2_to_4(name):
    """The authors' DCN setting (modulated, 2 deformable groups, stages 2-4),
    nothing else."""
    cfg = Config.fromfile(CONFIG_DIR / name).to_dict()
    backbone = cfg['model']['backbone']
    assert backbone.pop('dcn') == dict(
        type='DCNv2', deform_groups=2, fallback_on_stride=False)
    assert tuple(backbone.pop('stage_with_dcn')) == (False, True, True, True)
    assert cfg == Config.fromfile(CONFIG_DIR / DCN_CONFIGS[name]).to_dict()

    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    built = MODELS.build(Config.fromfile(CONFIG_DIR / name).model.backbone)
    for stage, layer in enumerate((
            built.layer1,
            built.layer2,
            built.layer3,
            built.layer4,
    )):
        convs = [block.conv2.conv for block in layer]
        assert all(
            isinstance(c, ModulatedDeformConv2dPack) == (stage > 0)
            for c in convs)
    assert built.layer2[0].conv2.conv.deform_groups == 2


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_ours_and_runs(path, tmp_path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports['imports'] == ['resnest_mm']
    backbone = cfg.model.backbone
    # the depth the name says (s14 ... s200), and its ImageNet weights
    assert backbone.depth == int(re.search(r'_s(\d+)', path.name).group(1))
    if 'demo' not in path.parts:
        assert backbone.init_cfg['checkpoint'] == f'resnest{backbone.depth}'
        assert backbone.norm_cfg['type'] == 'SyncBN' and not backbone.norm_eval
        assert backbone.frozen_stages == 1
    if backbone.depth >= 200:
        backbone.depth = 14  # speed: test_s200_backbone_trains runs S-200
    if 'rpn_head' in cfg.model:
        _fewer_proposals(
            cfg.model
        )  # speed: the recipes sample 2000 proposals and 512 RoIs per image,
        # and the 4-conv box and 4- or 8-conv mask heads run on each
    model = build_model(cfg)  # no init_weights: no download
    assert isinstance(model.backbone, resnest_mm.ResNeSt)
    assert model.backbone.depth == backbone.depth

    # two-stage: roi_head.bbox_head (a list for cascades); one-stage:
    # bbox_head
    bbox_head = cfg.model.get('roi_head', cfg.model).bbox_head
    num_classes = (bbox_head[0]
                   if isinstance(bbox_head, list) else bbox_head).num_classes
    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    panoptic = 'semantic_head' in cfg.model
    packed = demo_mm_inputs(
        2, [(3, 96, 128), (3, 128, 96)],
        num_items=[3, 2],
        num_classes=num_classes,
        with_mask=with_mask,
        with_semantic=panoptic)
    data = model.data_preprocessor(packed, True)
    model.train()
    losses = model(**data, mode='loss')
    assert all(
        torch.isfinite(v).all() for k, v in losses.items()
        if k.startswith('loss') and torch.is_tensor(v))
    assert any('loss_mask' in k for k in losses) == with_mask
    assert ('loss_seg' in losses) == panoptic
    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    if panoptic:  # one segment id per pixel of the original image
        assert results[0].pred_panoptic_seg.sem_seg.shape == (1, 96, 128)
    else:
        assert 'bboxes' in results[0].pred_instances
        assert ('masks' in results[0].pred_instances) == with_mask
    if 'tta_model' in cfg and not with_mask:  # mmdet's TTA merges boxes only
        _predicts_with_tta(cfg, model, tmp_path)


def _predicts_with_tta(cfg, model, tmp_path):
    """The config's ``tta_model`` and ``tta_pipeline`` (what ``--tta``
    runs) merge the augmented predictions of one image; the pipeline's
    scales are shrunk from about 1333 px to tens (speed)."""
    from mmdet.registry import MODELS
    from mmengine.dataset import Compose, pseudo_collate
    tta = MODELS.build(dict(**cfg.tta_model, module=model))
    pipeline = copy.deepcopy(cfg.tta_pipeline)
    resizes = pipeline[-1]['transforms'][0]
    assert len(resizes) == 3 and len(pipeline[-1]['transforms'][1]) == 2
    for resize, size in zip(resizes, (32, 48, 64)):
        resize['scale'] = (size, size)
    image = tmp_path / 'image.png'
    Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (80, 64, 3),
                                          np.uint8)).save(image)
    augmented = Compose(pipeline)(
        dict(
            img_path=str(image),
            img_id=0,
            instances=[dict(bbox=[4, 4, 40, 40], bbox_label=0,
                            ignore_flag=0)]))
    assert len(augmented['inputs']) == 6  # 3 scales x flipped or not
    [merged] = tta.test_step(pseudo_collate([augmented]))
    boxes = merged.pred_instances.bboxes
    assert len(boxes) <= cfg.tta_model.tta_cfg.max_per_img
    assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 80).all()  # original


def test_s200_backbone_trains_with_checkpointing():
    """The S-200 recipes' backbone at its real depth, with activation
    checkpointing as configured: a training step at 64 px."""
    name = ('cascade-mask-rcnn_s200_fpn_syncbn-backbone+neck+head_'
            'all-tricks-3x_coco.py')
    backbone_cfg = Config.fromfile(CONFIG_DIR / name).model.backbone
    assert backbone_cfg.with_cp
    backbone_cfg.norm_cfg = dict(type='BN')  # SyncBN runs only on GPUs
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    model = MODELS.build(backbone_cfg).train()
    blocks = [b for n in model.res_layers for b in getattr(model, n)]
    assert len(blocks) == 3 + 24 + 36 + 3 and all(b.with_cp for b in blocks)
    outs = model(images((2, 3, 64, 64)))
    assert [o.shape[1:] for o in outs] == [(256, 16, 16), (512, 8, 8),
                                           (1024, 4, 4), (2048, 2, 2)]
    sum(o.square().mean() for o in outs).backward()
    grad = model.layer3[10].conv2.conv.weight.grad  # a recomputed block's
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def _fewer_proposals(model_cfg):
    model_cfg.train_cfg.rpn_proposal.max_per_img = 64
    model_cfg.test_cfg.rpn.max_per_img = 16
    rcnn = model_cfg.train_cfg.rcnn
    for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
        stage.sampler.num = 8


def test_every_config_carries_mmdets_tta():
    """--tta: mmdet's usual 3 scales x 2 flips (its retinanet_tta.py), at
    128 px in the demos; boxes merged by NMS at IoU 0.5. Panoptic FPN has
    none: mmdet has no test-time augmentation for panoptic models."""
    import mmdet

    from resnest_tools.tta import describe_tta
    upstream = Config.fromfile(
        Path(mmdet.__file__).parent /
        '.mim/configs/retinanet/retinanet_tta.py')
    demo = ('6 views per image: scales ((128, 128), (64, 64), (192, 192)) x '
            'flips (horizontal, none)')
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        if 'semantic_head' in cfg.model:
            assert 'tta_model' not in cfg, path
            continue
        assert cfg.tta_model.type == 'DetTTAModel', path
        assert cfg.tta_model.tta_cfg == upstream.tta_model.tta_cfg, path
        assert describe_tta(
            cfg.tta_pipeline) == (demo if 'demo' in path.parts else
                                  describe_tta(upstream.tta_pipeline)), path


def test_tta_refuses_instance_masks_early_and_names_the_way_out():
    from resnest_tools.tta import use_tta
    cfg = Config.fromfile(
        CONFIG_DIR / 'mask-rcnn_s50_fpn_syncbn-backbone+head_ms-1x_coco.py')
    with pytest.raises(ValueError, match='predicts instance masks') as error:
        use_tta(cfg)
    assert 'model.roi_head.mask_head=None test_evaluator.metric=bbox' in str(
        error.value)


def test_tta_without_tta_settings_names_them():
    from resnest_tools.tta import use_tta
    cfg = Config(
        dict(
            model=dict(type='FasterRCNN'), tta_model=dict(type='DetTTAModel')))
    with pytest.raises(ValueError, match='has no tta_pipeline. Inherit'):
        use_tta(cfg, 'my_config.py')
