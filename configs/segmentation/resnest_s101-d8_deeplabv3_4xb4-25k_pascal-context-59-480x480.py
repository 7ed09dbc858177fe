# DeepLabV3 with a dilated ResNeSt-101 on Pascal Context (59 classes): the
# authors' recipe next to this file (DeepLab_ResNeSt101_PContext, 56.49 mIoU
# multi-scale + flip; `--backbone resnest101`, nothing else changed) with the
# S-101 backbone (stem width 128) and its weights.
_base_ = './resnest_s50-d8_deeplabv3_4xb4-25k_pascal-context-59-480x480.py'

model = dict(
    backbone=dict(
        depth=101,
        stem_channels=128,
        init_cfg=dict(type='Pretrained', checkpoint='resnest101')))
