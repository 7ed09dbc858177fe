# DeepLabV3 with a dilated ResNeSt-200 on ADE20K: the authors' PyTorch-Encoding
# recipe (DeepLab_ResNeSt200_ADE, 48.36 mIoU multi-scale + flip;
# docs/source/model_zoo/segmentation.rst: `python train.py --dataset ADE20K
# --model deeplab --aux --backbone resnest200 --epochs 180`). Their train.py
# trains every dataset alike (scale 520, crop 480, the same heads and losses)
# and sets only the lr and the epochs per dataset, so this is the Pascal
# Context S-200 config next to it with ADE20K's data (mmseg's ADE20KDataset
# layout, as mmseg::_base_/datasets/ade20k.py), 150 classes, lr and schedule.
# Memory: with_cp (gradient checkpointing) stays off, as the recipe fits a
# 32 GB GPU without it: a training step of 4 480x480 images (the batch per
# GPU) needs about 17 GiB (estimated; configs/segmentation/README.md).
# On a 16 GB GPU add model.backbone.with_cp=True (about 7.6 GiB).
_base_ = './resnest_s200-d8_deeplabv3_4xb4-25k_pascal-context-59-480x480.py'

dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
model = dict(
    decode_head=dict(num_classes=150), auxiliary_head=dict(num_classes=150))
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        ann_file=''))  # every image in the folder
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        ann_file=''))
test_dataloader = val_dataloader

# lr 0.004 (train.py's for ADE20K at 16 per batch; heads 10x as before). 180
# epochs of the 20,210 training images, the last partial batch dropped:
# 180 x 1,263 = 227,340 iterations.
optim_wrapper = dict(optimizer=dict(lr=0.004))
max_iters = 227_340
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
