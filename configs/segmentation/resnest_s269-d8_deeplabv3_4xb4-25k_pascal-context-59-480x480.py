# DeepLabV3 with a dilated ResNeSt-269 on Pascal Context (59 classes): the
# authors' recipe next to this file (DeepLab_ResNeSt269_PContext, 58.92 mIoU
# multi-scale + flip; `--backbone resnest269`, nothing else changed) with the
# S-269 backbone (stem width 128) and its weights.
# Memory: with_cp (gradient checkpointing) stays off, as the recipe fits a
# 32 GB GPU without it: a training step of 4 480x480 images (the batch per
# GPU) needs about 22 GiB (estimated; configs/segmentation/README.md).
# On a 16 GB GPU add model.backbone.with_cp=True (about 9.4 GiB).
_base_ = './resnest_s50-d8_deeplabv3_4xb4-25k_pascal-context-59-480x480.py'

model = dict(
    backbone=dict(
        depth=269,
        stem_channels=128,
        init_cfg=dict(type='Pretrained', checkpoint='resnest269')))
