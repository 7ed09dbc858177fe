# The Cityscapes demo: the real DeepLabV3 S-50 recipe, shrunk to learn the
# generated Cityscapes-layout streets (python tools/make_demo_data.py
# cityscapes data/cityscapes, then python tools/convert_cityscapes.py
# data/cityscapes; 256x128 images) in minutes on a CPU. Everything not
# overridden here is the real recipe, data_root included (data/cityscapes/).
_base_ = '../resnest_s50-d8_deeplabv3_4xb2-80k_cityscapes-512x1024.py'

crop_size = (64, 128)  # the images are 128x256 (Cityscapes' 1024x2048)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        depth=14,  # speed on a CPU
        init_cfg=None))  # no ImageNet weights offline: from scratch

# The base's pipelines at an eighth of the scale.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(256, 128),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
# --tta: mmseg's tta_pipeline as inherited; its ratios are of the image, so
# at demo size already.
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# A short schedule: 200 iterations of 2 images (the base's batch per GPU), poly
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
