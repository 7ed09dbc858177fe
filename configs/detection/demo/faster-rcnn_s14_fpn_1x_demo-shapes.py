# The quickstart demo: the real Faster R-CNN S-50 recipe, shrunk to learn the
# generated shapes dataset (tools/make_demo_data.py coco data/coco) in minutes
# on a CPU. Everything not overridden here is the real recipe.
_base_ = '../faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py'

classes = ('circle', 'square', 'triangle')  # the demo data's categories
data_root = 'data/coco/'

model = dict(
    backbone=dict(
        depth=14,  # speed on a CPU
        frozen_stages=-1,  # no ImageNet weights offline: train every stage...
        init_cfg=None),  # ...from scratch
    roi_head=dict(bbox_head=dict(num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000,
                          max_per_img=300),  # speed: few objects per image
        rcnn=dict(sampler=dict(
            num=16))),  # speed: RoI sampling (the 4-conv box head dominates)
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100)))  # speed: few objects

# Images are 160x160: train at random scales around 128, test at 128.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(112, 112), (144, 144)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# --tta: the base's scales (mmdet's (1333, 800), half and 1.5x) at 128 px.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=s, keep_ratio=True)
                for s in [(128, 128), (64, 64), (192, 192)]
            ],
            [
                dict(type='RandomFlip', prob=1.),
                dict(type='RandomFlip', prob=0.)
            ],
            [dict(type='LoadAnnotations', with_bbox=True)],
            [
                dict(
                    type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                               'scale_factor', 'flip', 'flip_direction'))
            ],
        ])
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# A short schedule: 60 iterations per epoch, evaluated every 3 epochs.
max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=3)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=60),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[5],
        gamma=0.1)
]
optim_wrapper = dict(
    optimizer=dict(lr=0.02))  # from scratch, with BN everywhere
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=2))
auto_scale_lr = dict(
    base_batch_size=4
)  # lr 0.02 is for batch 4: --auto-scale-lr scales from it
