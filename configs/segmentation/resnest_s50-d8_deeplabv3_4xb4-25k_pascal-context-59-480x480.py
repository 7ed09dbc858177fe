# DeepLabV3 with a dilated ResNeSt-50 (output stride 8) on Pascal Context (59
# classes): the authors' PyTorch-Encoding recipe (DeepLab_ResNeSt50_PContext,
# 53.19 mIoU multi-scale + flip; docs/source/model_zoo/segmentation.rst:
# `python train.py --dataset pcontext --model deeplab --aux --backbone
# resnest50`, with experiments/segmentation/train.py's defaults) on mmseg's
# DeepLabV3 Pascal Context 59 config, which already has the authors' sizes
# (scale 520, crop 480, slide inference 480 with stride 320 as their
# MultiEvalModule), weight decay 1e-4 and SyncBN. What differs is below.
_base_ = ('mmseg::deeplabv3/'
          'deeplabv3_r50-d8_4xb4-80k_pascal-context-59-480x480.py')
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the weights come from the backbone's init_cfg alone
    backbone=dict(
        type='ResNeSt',
        stem_channels=64,
        init_cfg=dict(type='Pretrained', checkpoint='resnest50')),
    # Their DeepLabV3Head: ASPP of in_channels // 8 = 256 channels (mmseg:
    # 512), bilinear upsampling with align_corners=True. mmseg's ASPPHead
    # fuses the five branches with one 3x3 conv where theirs has a 1x1
    # projection (with Dropout2d 0.5) before it: the nearest mmseg has.
    decode_head=dict(channels=256, align_corners=True),
    # --aux: an FCN head on stage 3 (1024 -> 256 channels, as mmseg's),
    # --aux-weight 0.2 (mmseg: 0.4). No --se-loss and no JPU in this recipe.
    auxiliary_head=dict(align_corners=True, loss_decode=dict(loss_weight=0.2)))

# No PhotoMetricDistortion and no cat_max_ratio: their training transform is
# the random scale (long side 520 x 0.5..2.0), crop 480 and flip alone.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(520, 520),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=(480, 480)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# SGD, lr 0.001 for the backbone and 10x for the heads (train.py's
# LR_Scheduler_Head), poly decay (power 0.9) to 0. 80 epochs of the 4,998
# training images at 16 per batch, the last partial batch dropped: 80 x 312 =
# 24,960 iterations ('25k' in the name).
optim_wrapper = dict(
    optimizer=dict(lr=0.001),
    paramwise_cfg=dict(
        custom_keys=dict(
            decode_head=dict(lr_mult=10.0), auxiliary_head=dict(
                lr_mult=10.0))))
max_iters = 24_960
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters)
