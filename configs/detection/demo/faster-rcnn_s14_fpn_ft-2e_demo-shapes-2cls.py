# Fine-tuning on a dataset with other classes (configs/detection/README.md,
# "Fine-tuning"): the quickstart demo detector (faster-rcnn_s14_fpn_1x_demo-
# shapes.py, as `make demo` leaves it) learns a dataset of two of its three
# shapes, named by `metainfo`. The box head's classifier and class-wise
# regressor change shape: tools/train.py lists them as re-initialised, and
# everything else starts from the checkpoint.
_base_ = './faster-rcnn_s14_fpn_1x_demo-shapes.py'

load_from = 'work_dirs/detection_demo/epoch_6.pth'
classes = ('circle', 'triangle')  # the new dataset's classes

model = dict(roi_head=dict(bbox_head=dict(num_classes=len(classes))))
train_dataloader = dict(dataset=dict(metainfo=dict(classes=classes)))
val_dataloader = dict(dataset=dict(metainfo=dict(classes=classes)))
test_dataloader = val_dataloader

# A shorter schedule at a quarter of the demo's learning rate, as the weights
# are trained already.
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20)
]
optim_wrapper = dict(optimizer=dict(lr=0.005))
default_hooks = dict(checkpoint=dict(interval=max_epochs))
