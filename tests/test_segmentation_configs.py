"""Every segmentation config builds our dilated backbone and runs a loss and a
predict forward."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import resnest_mm
from resnest_mm.releases import RELEASES
from resnest_mm.tooling.runner_setup import build_model

ROOT = Path(__file__).parents[1]
CONFIGS = sorted(ROOT.glob('configs/segmentation/**/*.py'))
REAL = [p for p in CONFIGS if 'demo' not in p.parts]
#: dataset -> (crop size, iterations, images per batch on 4 GPUs), as the
#: reference
RECIPES = {
    'ade20k': ((512, 512), 160_000, 16),
    'cityscapes': ((512, 1024), 80_000, 8)
}


def test_the_ten_reference_configs_are_there():
    expected = {
        f'resnest_s{depth}-d8_deeplabv3_{schedule}.py'
        for depth in (50, 101) for schedule in ('4xb4-160k_ade20k-512x512',
                                                '4xb2-80k_cityscapes-512x1024')
    }
    expected |= {
        f'resnest_s101-d8_{head}_{schedule}.py'
        for head in ('fcn', 'pspnet', 'deeplabv3plus')
        for schedule in ('4xb4-160k_ade20k-512x512',
                         '4xb2-80k_cityscapes-512x1024')
    }
    assert {p.name for p in REAL} == expected


@pytest.mark.parametrize('path', REAL, ids=lambda p: p.stem)
def test_config_is_the_reference_recipe(path):
    cfg = Config.fromfile(path)
    dataset = 'ade20k' if 'ade20k' in path.name else 'cityscapes'
    crop, iters, batch = RECIPES[dataset]
    backbone, model = cfg.model.backbone, cfg.model
    assert cfg.custom_imports['imports'] == ['resnest_mm'
                                             ] and backbone.type == 'ResNeSt'
    depth = int(path.name.split('_s')[1].split('-')[0])
    release = RELEASES[f'resnest{depth}']  # the weights it starts from
    assert backbone.depth == depth
    assert backbone.stem_channels == release['stem_channels']
    assert (backbone.strides, backbone.dilations) == ((1, 2, 1, 1), (1, 1, 2,
                                                                     4))
    assert backbone.contract_dilation and not backbone.norm_eval
    # one source of weights: the authors' ImageNet release, by short name
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'resnest{depth}')
    assert model.pretrained is None and 'pretrained' not in backbone
    for norm in (backbone.norm_cfg, model.decode_head.norm_cfg,
                 model.auxiliary_head.norm_cfg):
        assert norm.type == 'SyncBN'
    aux = model.auxiliary_head
    # stage 3
    assert (aux.type, aux.in_index, aux.in_channels) == ('FCNHead', 2, 1024)
    assert (cfg.optim_wrapper.optimizer.type,
            cfg.optim_wrapper.optimizer.lr) == ('SGD', 0.01)
    [poly] = cfg.param_scheduler
    assert (poly.type, poly.end, cfg.train_cfg.max_iters) == ('PolyLR', iters,
                                                              iters)
    assert cfg.train_dataloader.batch_size * 4 == batch
    assert tuple(cfg.model.data_preprocessor.size) == crop == cfg.crop_size


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_ours_and_runs(path):
    cfg = Config.fromfile(path)
    # the recipes pad to their crop size
    cfg.model.data_preprocessor.size = (64, 64)
    model = build_model(cfg)
    assert isinstance(model.backbone, resnest_mm.ResNeSt)
    num_classes = model.decode_head.num_classes
    expected = 150 if 'ade20k' in path.name else 19
    if 'classes' in cfg:  # a fine-tuning config names its own
        expected = len(cfg.classes)
    assert num_classes == expected

    gen = torch.Generator().manual_seed(0)
    packed = dict(inputs=[], data_samples=[])
    # 2: ASPP's image pooling needs more than one value per channel
    for _ in range(2):
        packed['inputs'].append(
            torch.randint(
                0, 256, (3, 64, 64), generator=gen, dtype=torch.uint8))
        sample = SegDataSample(
            metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, 64, 64), generator=gen))
        packed['data_samples'].append(sample)
    model.train()
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= losses.keys()
    assert all(
        torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k)

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
        features = model.backbone(data['inputs'])
    assert [r.pred_sem_seg.data.shape for r in results] == [(1, 64, 64)] * 2
    # dilated, output stride 8: stage 1 at 1/4, stages 2 to 4 at 1/8
    assert [f.shape[-1] for f in features] == [16, 8, 8, 8]


def test_the_backbone_init_cfg_is_the_only_source_of_weights(tmp_path):
    """The recipe's weights load through our loader into the segmentor's
    backbone, and the segmentor-level ``pretrained`` the mmseg base had would
    now be refused as a second."""
    cfg = Config.fromfile(
        ROOT / 'configs/segmentation/resnest_s50-d8_deeplabv3_4xb4-160k_'
        'ade20k-512x512.py')
    reference = resnest_mm.ResNeSt(depth=50, stem_channels=64)
    # not the initialisation's values
    torch.nn.init.normal_(reference.layer4[2].conv3.weight)
    path = tmp_path / 'resnest50.pth'
    torch.save(reference.state_dict(), path)
    # in place of the download
    cfg.model.backbone.init_cfg.checkpoint = str(path)
    model = build_model(cfg)
    model.init_weights()
    assert torch.equal(model.backbone.layer4[2].conv3.weight,
                       reference.layer4[2].conv3.weight)

    cfg.model.pretrained = 'open-mmlab://resnest50'
    with pytest.raises(
            ValueError,
            match='init_cfg and pretrained cannot be set at the same'):
        build_model(cfg)


def test_every_config_carries_mmsegs_tta():
    """--tta: mmseg's ratios 0.5-1.75 of the image, each with and without a
    horizontal flip, class probabilities averaged (SegTTAModel); the demos
    take them as they are, ratios of their small images."""
    from resnest_mm.tooling.tta import describe_tta
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        assert cfg.tta_model.type == 'SegTTAModel', path
        assert describe_tta(cfg.tta_pipeline) == (
            '12 views per image: scales (factor 0.5, factor 0.75, factor 1.0, '
            'factor 1.25, factor 1.5, factor 1.75) x flips (none, horizontal)'
        ), path
