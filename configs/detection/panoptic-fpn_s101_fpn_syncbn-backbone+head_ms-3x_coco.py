# Panoptic FPN with ResNeSt-101: our S-50 recipe with the deeper backbone, as
# mmdet's panoptic-fpn_r101_fpn_ms-3x_coco.py is its R-50 one (R-101: 44.1 PQ,
# mmdet's metafile). No result is published for S-101.
_base_ = './panoptic-fpn_s50_fpn_syncbn-backbone+head_ms-3x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        stem_channels=128,
        init_cfg=dict(type='Pretrained', checkpoint='resnest101')))
