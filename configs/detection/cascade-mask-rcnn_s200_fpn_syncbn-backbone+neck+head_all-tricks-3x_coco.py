# Cascade Mask R-CNN with ResNeSt-200 and "all tricks", 3x: the authors'
# detectron2 recipe configs/COCO-InstanceSegmentation/
# mask_cascade_rcnn_ResNeSt_200_FPN_syncBN_all_tricks_3x.yaml of
# zhanghang1989/detectron2-ResNeSt, 50.54 box / 44.21 mask AP on COCO val2017
# (its README). Our S-101 Cascade Mask R-CNN recipe (mmdet's: SyncBN backbone,
# 4conv1fc box head and mask head, class-agnostic regression, RGB mean/std,
# 16 images, lr 0.02; RPN post-NMS top 2000 per image is already mmdet's
# cascade setting) plus the tricks stated here. mmdet 3.3's DetTTAModel
# refuses masks, so this config has no tta_model.
_base_ = './cascade-mask-rcnn_s101_fpn_syncbn-backbone+head_ms-1x_coco.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    backbone=dict(
        depth=200,
        # activations recomputed in backward: S-200's 66 blocks at up to
        # 1440 px, 2 images per GPU, are meant to fit a 32 GB GPU (not
        # measured here)
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='resnest200')),
    neck=dict(norm_cfg=norm_cfg),  # FPN.NORM: SyncBN
    roi_head=dict(mask_head=dict(num_convs=8)))  # ROI_MASK_HEAD.NUM_CONV: 8

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(
        type='LoadAnnotations',
        with_bbox=True,
        with_mask=True,
        poly2mask=False),
    # INPUT.CROP (detectron2's default "relative_range" 0.9): a crop of 90 to
    # 100% of each side before resizing, boxes re-fit to the cropped masks as
    # detectron2 does. detectron2 centres the crop window on a random
    # object's box; mmdet's crop is uniform and drops an image left empty.
    dict(
        type='RandomCrop',
        crop_type='relative_range',
        crop_size=(0.9, 0.9),
        recompute_bbox=True,
        allow_negative_crop=False),
    # MIN_SIZE_TRAIN (640, 864) "range", MAX_SIZE_TRAIN 1440
    dict(
        type='RandomResize', scale=[(1440, 640), (1440, 864)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    sampler=dict(type='InfiniteSampler'),
    dataset=dict(pipeline=train_pipeline))

# SOLVER: 270k iterations of 16 images, lr x0.1 at 240k and 255k, detectron2's
# linear warm-up (1000 iterations from 0.001); evaluated at the end as theirs
max_iters = 270000
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[240000, 255000],
        gamma=0.1)
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000))
log_processor = dict(by_epoch=False)

# TEST.PRECISE_BN (NUM_ITER 200): at the end of training, before testing
custom_hooks = [dict(type='PreciseBNHook', num_iters=200)]
