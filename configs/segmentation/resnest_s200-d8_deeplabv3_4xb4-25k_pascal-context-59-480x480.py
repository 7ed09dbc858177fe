# DeepLabV3 with a dilated ResNeSt-200 on Pascal Context (59 classes): the
# authors' recipe next to this file (DeepLab_ResNeSt200_PContext, 58.37 mIoU
# multi-scale + flip; `--backbone resnest200`, nothing else changed) with the
# S-200 backbone (stem width 128) and its weights.
# Memory: with_cp (gradient checkpointing) stays off, as the recipe fits a
# 32 GB GPU without it: a training step of 4 480x480 images (the batch per
# GPU) needs about 17 GiB (estimated; configs/segmentation/README.md).
# On a 16 GB GPU add model.backbone.with_cp=True (about 7.6 GiB).
_base_ = './resnest_s50-d8_deeplabv3_4xb4-25k_pascal-context-59-480x480.py'

model = dict(
    backbone=dict(
        depth=200,
        stem_channels=128,
        init_cfg=dict(type='Pretrained', checkpoint='resnest200')))
