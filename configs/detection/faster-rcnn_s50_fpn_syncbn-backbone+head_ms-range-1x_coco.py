# faster-rcnn with ResNeSt-50: mmdet's own recipe (SyncBN in backbone and
# heads, Shared4Conv1FCBBoxHead, multi-scale range training, 1x), with our
# backbone and the authors' ImageNet weights.
_base_ = [
    'mmdet::resnest/'
    'faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py',
    'mmdet::retinanet/retinanet_tta.py',  # --tta: mmdet's 3 scales x 2 flips
]
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='ResNeSt',
        init_cfg=dict(type='Pretrained', checkpoint='resnest50')))
