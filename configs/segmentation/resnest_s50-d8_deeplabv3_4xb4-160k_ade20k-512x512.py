# DeepLabV3 with a dilated ResNeSt-50 (output stride 8) on ADE20K: the S-101
# recipe next to this file with the S-50 backbone (stem width 64) and its
# weights.
_base_ = './resnest_s101-d8_deeplabv3_4xb4-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        depth=50,
        stem_channels=64,
        init_cfg=dict(type='Pretrained', checkpoint='resnest50')))
