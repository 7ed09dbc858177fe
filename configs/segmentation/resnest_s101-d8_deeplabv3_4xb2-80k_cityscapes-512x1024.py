# DeepLabV3 with a dilated ResNeSt-101 (output stride 8) on Cityscapes: mmseg's
# own recipe (512x1024, 80k iterations, 8 images per batch, SyncBN, auxiliary
# FCN head on stage 3, SGD lr 0.01 with poly decay), with our backbone and the
# authors' ImageNet weights.
_base_ = ('mmseg::resnest/'
          'resnest_s101-d8_deeplabv3_4xb2-80k_cityscapes-512x1024.py')
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the weights come from the backbone's init_cfg alone
    backbone=dict(
        type='ResNeSt',
        init_cfg=dict(type='Pretrained', checkpoint='resnest101')))
