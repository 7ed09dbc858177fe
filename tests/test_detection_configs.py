"""Every detection config builds our backbone and runs a loss and a predict
forward."""
from pathlib import Path

import pytest
import torch
from mmcv.ops import ModulatedDeformConv2dPack
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.registry import init_default_scope

import resnest_mm
from resnest_mm.tooling.runner_setup import build_model

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
def test_config_builds_ours_and_runs(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports['imports'] == ['resnest_mm']
    backbone = cfg.model.backbone
    # the real recipes: ImageNet weights by short name
    if 'demo' not in path.parts:
        assert backbone.init_cfg['checkpoint'] == f'resnest{backbone.depth}'
        assert backbone.norm_cfg['type'] == 'SyncBN' and not backbone.norm_eval
        assert backbone.frozen_stages == 1
    _fewer_proposals(
        cfg.model
    )  # speed: the recipes sample 2000 proposals and 512 RoIs per image
    model = build_model(cfg)  # no init_weights: no download
    assert isinstance(model.backbone, resnest_mm.ResNeSt)

    num_classes = cfg.model.roi_head.bbox_head[0]['num_classes'] if isinstance(
        cfg.model.roi_head.bbox_head,
        list) else cfg.model.roi_head.bbox_head.num_classes
    with_mask = 'mask_head' in cfg.model.roi_head
    packed = demo_mm_inputs(
        2, [(3, 96, 128), (3, 128, 96)],
        num_items=[3, 2],
        num_classes=num_classes,
        with_mask=with_mask)
    data = model.data_preprocessor(packed, True)
    model.train()
    losses = model(**data, mode='loss')
    assert all(
        torch.isfinite(v).all() for k, v in losses.items()
        if k.startswith('loss') and torch.is_tensor(v))
    assert any('loss_mask' in k for k in losses) == with_mask
    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2 and 'bboxes' in results[0].pred_instances
    assert ('masks' in results[0].pred_instances) == with_mask


def _fewer_proposals(model_cfg):
    model_cfg.train_cfg.rpn_proposal.max_per_img = 64
    model_cfg.test_cfg.rpn.max_per_img = 64
    rcnn = model_cfg.train_cfg.rcnn
    for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
        stage.sampler.num = 32


def test_every_config_carries_mmdets_tta():
    """--tta: mmdet's usual 3 scales x 2 flips (its retinanet_tta.py), at
    128 px in the demos; boxes merged by NMS at IoU 0.5."""
    import mmdet

    from resnest_mm.tooling.tta import describe_tta
    upstream = Config.fromfile(
        Path(mmdet.__file__).parent /
        '.mim/configs/retinanet/retinanet_tta.py')
    demo = ('6 views per image: scales ((128, 128), (64, 64), (192, 192)) x '
            'flips (horizontal, none)')
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        assert cfg.tta_model.type == 'DetTTAModel', path
        assert cfg.tta_model.tta_cfg == upstream.tta_model.tta_cfg, path
        assert describe_tta(
            cfg.tta_pipeline) == (demo if 'demo' in path.parts else
                                  describe_tta(upstream.tta_pipeline)), path


def test_tta_refuses_instance_masks_early_and_names_the_way_out():
    from resnest_mm.tooling.tta import use_tta
    cfg = Config.fromfile(
        CONFIG_DIR / 'mask-rcnn_s50_fpn_syncbn-backbone+head_ms-1x_coco.py')
    with pytest.raises(ValueError, match='predicts instance masks') as error:
        use_tta(cfg)
    assert 'model.roi_head.mask_head=None test_evaluator.metric=bbox' in str(
        error.value)


def test_tta_without_tta_settings_names_them():
    from resnest_mm.tooling.tta import use_tta
    cfg = Config(
        dict(
            model=dict(type='FasterRCNN'), tta_model=dict(type='DetTTAModel')))
    with pytest.raises(ValueError, match='has no tta_pipeline. Inherit'):
        use_tta(cfg, 'my_config.py')
