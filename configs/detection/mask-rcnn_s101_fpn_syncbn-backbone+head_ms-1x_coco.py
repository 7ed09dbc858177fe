# mask-rcnn with ResNeSt-101: mmdet's own recipe (SyncBN in backbone and heads,
# Shared4Conv1FCBBoxHead, multi-scale choice training, 1x), with our backbone
# and the authors' ImageNet weights.
_base_ = [
    'mmdet::resnest/mask-rcnn_s101_fpn_syncbn-backbone+head_ms-1x_coco.py',
    'mmdet::retinanet/retinanet_tta.py',  # --tta: mmdet's 3 scales x 2 flips
]
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='ResNeSt',
        init_cfg=dict(type='Pretrained', checkpoint='resnest101')))
