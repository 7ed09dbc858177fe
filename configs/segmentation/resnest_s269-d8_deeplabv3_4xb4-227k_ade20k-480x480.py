# DeepLabV3 with a dilated ResNeSt-269 on ADE20K: the authors' recipe next to
# this file (DeepLab_ResNeSt269_ADE, 47.60 mIoU multi-scale + flip;
# `--backbone resnest269` and train.py's default of 180 epochs for ADE20K)
# with the S-269 backbone and its weights.
# Memory: with_cp (gradient checkpointing) stays off, as the recipe fits a
# 32 GB GPU without it: a training step of 4 480x480 images (the batch per
# GPU) needs about 22 GiB (estimated; configs/segmentation/README.md).
# On a 16 GB GPU add model.backbone.with_cp=True (about 9.4 GiB).
_base_ = './resnest_s200-d8_deeplabv3_4xb4-227k_ade20k-480x480.py'

model = dict(
    backbone=dict(
        depth=269, init_cfg=dict(type='Pretrained', checkpoint='resnest269')))
