# RetinaNet with ResNeSt-50: mmdet's retinanet/retinanet_r50_fpn_1x_coco.py
# 36.5 box AP, mmdet's metafile) with ResNeSt-safe backbone settings:
# SyncBN, norms trained (norm_eval=False) as in every ResNeSt recipe of mmdet
# and of the authors, the authors' RGB mean/std. The head is mmdet's, without
# norms. No reference number exists for ResNeSt RetinaNet.
# Its base brings mmdet's tta_model and tta_pipeline (tools/test.py --tta:
# flip x 3 scales).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(
        mean=[123.68, 116.779, 103.939], std=[58.393, 57.12, 57.375]),
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
