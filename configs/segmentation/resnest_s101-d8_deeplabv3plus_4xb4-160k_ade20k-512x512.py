# DeepLabV3+ with a dilated ResNeSt-101 (output stride 8) on ADE20K: mmseg's
# own recipe (512x512, 160k iterations, 16 images per batch, SyncBN, auxiliary
# FCN head on stage 3, SGD lr 0.01 with poly decay), with our backbone and the
# authors' ImageNet weights.
_base_ = ('mmseg::resnest/'
          'resnest_s101-d8_deeplabv3plus_4xb4-160k_ade20k-512x512.py')
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the weights come from the backbone's init_cfg alone
    backbone=dict(
        type='ResNeSt',
        init_cfg=dict(type='Pretrained', checkpoint='resnest101')))
