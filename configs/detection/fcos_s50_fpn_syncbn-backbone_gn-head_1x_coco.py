# FCOS with ResNeSt-50: mmdet's fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py
# (R-50 caffe: 36.6 box AP, mmdet's metafile) with ResNeSt-safe backbone
# settings in place of its caffe ResNet's: SyncBN with trained norms (caffe
# R-50 freezes every norm: requires_grad=False, norm_eval=True), pytorch style,
# the authors' RGB mean/std (not caffe's BGR mean and unit std). Users who kept
# the caffe defaults with ResNeSt reported 7-8 AP below ResNet. The GN head
# and the schedule are mmdet's. No reference number exists for ResNeSt FCOS.
_base_ = [
    'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
    'mmdet::retinanet/retinanet_tta.py'  # tools/test.py --tta: flip x 3 scales
]
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[123.68, 116.779, 103.939],
        std=[58.393, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='ResNeSt',
        stem_channels=64,
        depth=50,
        radix=2,
        reduction_factor=4,
        avg_down_stride=True,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='resnest50')))
