# faster-rcnn with ResNeSt-50 and DCNv2 (modulated deformable conv, "mdconv")
# as the split-attention conv of stages 2 to 4 (c3-c5), 2 deformable groups:
# the authors' strongest released detector (their detectron2
# `faster_rcnn_ResNeSt_50_FPN_dcn_syncbn_range-scale_1x`). The rest is our
# S-50 Faster R-CNN recipe unchanged.
_base_ = './faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco.py'

model = dict(
    backbone=dict(
        dcn=dict(type='DCNv2', deform_groups=2, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)))
