"""Every segmentation config builds our dilated backbone and runs a loss and a
predict forward."""
from pathlib import Path

import mmseg
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import resnest_mm
from resnest_mm.releases import RELEASES
from resnest_tools.runner_setup import build_model

ROOT = Path(__file__).parents[1]
CONFIGS = sorted(ROOT.glob('configs/segmentation/**/*.py'))
REAL = [p for p in CONFIGS if 'demo' not in p.parts]
#: the authors' PyTorch-Encoding recipes (crop 480); the others are mmseg's
AUTHORS = [p for p in REAL if '480x480' in p.name]
MMSEG = [p for p in REAL if p not in AUTHORS]
#: dataset -> (crop size, iterations, images per batch on 4 GPUs), as the
#: reference
RECIPES = {
    'ade20k': ((512, 512), 160_000, 16),
    'cityscapes': ((512, 1024), 80_000, 8)
}
#: dataset -> (training images, epochs, lr of the backbone) of the authors'
#: experiments/segmentation/train.py (PyTorch-Encoding) at 16 per batch
AUTHORS_RECIPES = {
    'pascal-context-59': (4_998, 80, 0.001),
    'ade20k': (20_210, 180, 0.004)
}
#: dataset in a config's name -> (number of classes, mmseg's dataset base)
DATASETS = {
    'ade20k': (150, 'ade20k.py'),
    'cityscapes': (19, 'cityscapes.py'),
    'pascal-context-59': (59, 'pascal_context_59.py')
}
MMSEG_DATASET_BASES = Path(
    mmseg.__file__).parent / '.mim/configs/_base_/datasets'


def dataset_of(path):
    [dataset] = [d for d in DATASETS if f'_{d}-' in path.name]
    return dataset


def assert_backbone_is_the_named_release(path, backbone):
    """Depth, stem width and ImageNet weights are those of the name's
    ``s<depth>``."""
    depth = int(path.name.split('_s')[1].split('-')[0])
    release = RELEASES[f'resnest{depth}']  # the weights it starts from
    assert backbone.type == 'ResNeSt' and backbone.depth == depth
    assert backbone.stem_channels == release.stem_channels
    # one source of weights: the authors' ImageNet release, by short name
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'resnest{depth}')
    assert (backbone.strides, backbone.dilations) == ((1, 2, 1, 1), (1, 1, 2,
                                                                     4))
    assert backbone.contract_dilation and not backbone.norm_eval


def test_the_reference_configs_are_there():
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
    # the authors' PyTorch-Encoding DeepLabV3 zoo
    expected |= {
        f'resnest_s{depth}-d8_deeplabv3_4xb4-25k_pascal-context-59-480x480.py'
        for depth in (50, 101, 200, 269)
    }
    expected |= {
        f'resnest_s{depth}-d8_deeplabv3_4xb4-227k_ade20k-480x480.py'
        for depth in (200, 269)
    }
    assert {p.name for p in REAL} == expected


@pytest.mark.parametrize('path', MMSEG, ids=lambda p: p.stem)
def test_config_is_the_reference_recipe(path):
    cfg = Config.fromfile(path)
    crop, iters, batch = RECIPES[dataset_of(path)]
    backbone, model = cfg.model.backbone, cfg.model
    assert cfg.custom_imports['imports'] == ['resnest_mm']
    assert_backbone_is_the_named_release(path, backbone)
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


@pytest.mark.parametrize('path', AUTHORS, ids=lambda p: p.stem)
def test_config_is_the_authors_recipe(path):
    """PyTorch-Encoding's train.py and test.py settings in mmseg terms, on
    mmseg's own dataset settings."""
    cfg = Config.fromfile(path)
    dataset = dataset_of(path)
    images, epochs, lr = AUTHORS_RECIPES[dataset]
    model, backbone = cfg.model, cfg.model.backbone
    assert cfg.custom_imports['imports'] == ['resnest_mm']
    assert_backbone_is_the_named_release(path, backbone)
    assert model.pretrained is None and 'pretrained' not in backbone
    # with_cp stays off: S-269 fits a 32 GB GPU at 4 images (README)
    assert not backbone.get('with_cp', False)
    for norm in (backbone.norm_cfg, model.decode_head.norm_cfg,
                 model.auxiliary_head.norm_cfg):
        assert norm.type == 'SyncBN'
    head, aux = model.decode_head, model.auxiliary_head
    # DeepLabV3Head: ASPP rates 12/24/36 at 2048 // 8 channels
    assert (head.type, head.dilations, head.channels) == ('ASPPHead',
                                                          (1, 12, 24, 36), 256)
    # --aux: FCN head on stage 3, --aux-weight 0.2
    assert (aux.type, aux.in_index, aux.in_channels,
            aux.loss_decode.loss_weight) == ('FCNHead', 2, 1024, 0.2)
    assert head.align_corners and aux.align_corners  # their up_kwargs
    # SGD, heads at 10x (LR_Scheduler_Head), poly to 0 over the epochs
    optim = cfg.optim_wrapper
    assert (optim.optimizer.type, optim.optimizer.lr, optim.optimizer.momentum,
            optim.optimizer.weight_decay) == ('SGD', lr, 0.9, 1e-4)
    assert optim.paramwise_cfg.custom_keys == dict(
        decode_head=dict(lr_mult=10.0), auxiliary_head=dict(lr_mult=10.0))
    batch = cfg.train_dataloader.batch_size * 4
    [poly] = cfg.param_scheduler
    iters = epochs * (images // batch)  # drop_last=True
    assert (batch, poly.type, poly.power, poly.eta_min) == (16, 'PolyLR', 0.9,
                                                            0.0)
    assert poly.end == cfg.train_cfg.max_iters == iters
    # base size 520, crop 480, flip; no photometric distortion
    train = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in train] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
        'RandomFlip', 'PackSegInputs'
    ]
    assert (train[2].scale, train[2].ratio_range,
            train[3].crop_size) == ((520, 520), (0.5, 2.0), (480, 480))
    assert tuple(model.data_preprocessor.size) == (480, 480)
    # MultiEvalModule: windows of 480 at a stride of 2/3, long side 520;
    # ms+flip (their numbers' protocol): scales 0.5..1.75, flipped
    assert model.test_cfg == dict(
        mode='slide', crop_size=(480, 480), stride=(320, 320))
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (520, 520)
    [resizes, flips, _, _] = cfg.tta_pipeline[1].transforms
    assert [r.scale_factor
            for r in resizes] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [f.prob for f in flips] == [0.0, 1.0]
    assert cfg.tta_model.type == 'SegTTAModel'
    # the dataset as mmseg's own base sets it up
    reference = Config.fromfile(MMSEG_DATASET_BASES / DATASETS[dataset][1])
    for split in ('train', 'val', 'test'):
        ours, ref = (
            c[f'{split}_dataloader'].dataset for c in (cfg, reference))
        for key in ('type', 'data_root', 'data_prefix'):
            assert ours[key] == ref[key], (split, key)
        assert ours.get('ann_file', '') == ref.get('ann_file', '')


def test_the_authors_heads_learn_ten_times_faster():
    """mmengine's optimizer constructor turns the recipe's ``lr_mult`` into
    their LR_Scheduler_Head: backbone at lr, both heads at 10x."""
    cfg = Config.fromfile(
        ROOT / 'configs/segmentation/demo/resnest_s14-d8_deeplabv3_1xb4-200_'
        'pascal-context-59-demo-64x64.py')
    model = build_model(cfg)
    with DefaultScope.overwrite_default_scope('mmseg'):
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    lr_of = {
        id(p): group['lr']
        for group in optimizer.param_groups for p in group['params']
    }
    for name, p in model.named_parameters():
        head = name.startswith(('decode_head.', 'auxiliary_head.'))
        assert lr_of[id(p)] == pytest.approx(0.01 if head else 0.001), name


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_ours_and_runs(path):
    cfg = Config.fromfile(path)
    # tiny, and tinier for S-200 and S-269, whose CPU steps are slow
    size = 32 if cfg.model.backbone.depth >= 200 else 64
    # the recipes pad to their crop size
    cfg.model.data_preprocessor.size = (size, size)
    model = build_model(cfg)
    assert isinstance(model.backbone, resnest_mm.ResNeSt)
    num_classes = model.decode_head.num_classes
    expected = DATASETS[dataset_of(path)][0]
    if 'classes' in cfg:  # a fine-tuning config names its own
        expected = len(cfg.classes)
    assert num_classes == expected

    gen = torch.Generator().manual_seed(0)
    packed = dict(inputs=[], data_samples=[])
    # 2: ASPP's image pooling needs more than one value per channel
    for _ in range(2):
        packed['inputs'].append(
            torch.randint(
                0, 256, (3, size, size), generator=gen, dtype=torch.uint8))
        sample = SegDataSample(
            metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, size, size), generator=gen))
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
    assert [r.pred_sem_seg.data.shape
            for r in results] == [(1, size, size)] * 2
    # dilated, output stride 8: stage 1 at 1/4, stages 2 to 4 at 1/8
    assert [f.shape[-1] for f in features] == [size // 4] + [size // 8] * 3


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
    from resnest_tools.tta import describe_tta
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        assert cfg.tta_model.type == 'SegTTAModel', path
        assert describe_tta(cfg.tta_pipeline) == (
            '12 views per image: scales (factor 0.5, factor 0.75, factor 1.0, '
            'factor 1.25, factor 1.5, factor 1.75) x flips (none, horizontal)'
        ), path


def test_scope_bases_resolve_where_the_distribution_has_another_name(
        monkeypatch, tmp_path):
    """OneDL ships ``mmseg`` as onedl-mmsegmentation, where mmengine's table
    names mmsegmentation: our tools point the scope at whichever
    distribution provides the module (here the real one, under a name that
    mmengine's table gets wrong)."""
    from mmengine.config.utils import MODULE2PACKAGE

    from resnest_tools.runner_setup import load_config
    monkeypatch.setitem(MODULE2PACKAGE, 'mmseg', 'renamed-mmsegmentation')
    config = tmp_path / 'deeplabv3.py'
    config.write_text("_base_ = 'mmseg::deeplabv3/"
                      "deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py'\n")
    with pytest.raises(ModuleNotFoundError, match='renamed-mmsegmentation'):
        Config.fromfile(config)
    cfg = load_config(str(config))
    assert MODULE2PACKAGE['mmseg'] == 'mmsegmentation'
    assert cfg.model.decode_head.type == 'ASPPHead'
