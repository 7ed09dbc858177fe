# cascade-mask-rcnn with ResNeSt-101 and DCNv2 (modulated deformable conv,
# "mdconv") as the split-attention conv of stages 2 to 4 (c3-c5), with the
# authors' DCN settings (2 deformable groups). The rest is our S-101 Cascade
# Mask R-CNN recipe unchanged. No result is published for this combination.
_base_ = './cascade-mask-rcnn_s101_fpn_syncbn-backbone+head_ms-1x_coco.py'

model = dict(
    backbone=dict(
        dcn=dict(type='DCNv2', deform_groups=2, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)))
