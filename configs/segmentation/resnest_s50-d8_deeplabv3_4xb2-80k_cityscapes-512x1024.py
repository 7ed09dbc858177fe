# DeepLabV3 with a dilated ResNeSt-50 (output stride 8) on Cityscapes: the
# S-101 recipe next to this file with the S-50 backbone (stem width 64) and its
# weights.
_base_ = './resnest_s101-d8_deeplabv3_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        depth=50,
        stem_channels=64,
        init_cfg=dict(type='Pretrained', checkpoint='resnest50')))
