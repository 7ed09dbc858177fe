# The ADE20K demo: the real DeepLabV3 S-50 recipe, shrunk to learn the
# generated ADE20K-layout scenes (python tools/make_demo_data.py ade20k
# data/ade, 128x128 images) in minutes on a CPU. Everything not overridden here
# is the real recipe, data_root included (data/ade/ADEChallengeData2016).
_base_ = '../resnest_s50-d8_deeplabv3_4xb4-160k_ade20k-512x512.py'

crop_size = (64, 64
             )  # the images are 128x128 (ADE20K's about 512 on the short side)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        depth=14,  # speed on a CPU
        init_cfg=None))  # no ImageNet weights offline: from scratch

# The base's pipelines with the short side at 128 instead of 512.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(512, 128),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
# --tta: mmseg's tta_pipeline as inherited; its ratios are of the image, so
# at demo size already.
train_dataloader = dict(num_workers=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# A short schedule: 200 iterations of 4 images (the base's batch per GPU), poly
# decay.
max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=100)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=100))
