# Fine-tuning on a dataset with other classes (configs/segmentation/README.md,
# "Fine-tuning"): the ADE20K demo segmentor (resnest_s14-d8_deeplabv3_1xb4-
# 200_ade20k-demo-64x64.py, trained with tools/train.py) learns three of the
# classes its data draws, named by `metainfo`; mmseg maps the others to 255
# (ignored). Both heads' classifiers (conv_seg) change shape: tools/train.py
# lists them as re-initialised, and everything else starts from the checkpoint.
_base_ = './resnest_s14-d8_deeplabv3_1xb4-200_ade20k-demo-64x64.py'

load_from = ('work_dirs/resnest_s14-d8_deeplabv3_1xb4-200_ade20k-demo-64x64/'
             'iter_200.pth')
classes = ('sky', 'tree', 'road')  # the new dataset's classes

model = dict(
    decode_head=dict(num_classes=len(classes)),
    auxiliary_head=dict(num_classes=len(classes)))
train_dataloader = dict(dataset=dict(metainfo=dict(classes=classes)))
val_dataloader = dict(dataset=dict(metainfo=dict(classes=classes)))
test_dataloader = val_dataloader

# Half the demo's schedule at its learning rate: the re-initialised
# classifiers need it (at a tenth of it, 100 iterations left the rare class
# "tree" at 0 IoU).
max_iters = 100
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
