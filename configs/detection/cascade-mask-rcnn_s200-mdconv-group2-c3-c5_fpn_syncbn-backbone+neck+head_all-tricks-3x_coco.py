# Cascade Mask R-CNN with ResNeSt-200, DCNv2 and "all tricks", 3x: the
# authors' detectron2 recipe configs/COCO-InstanceSegmentation/
# mask_cascade_rcnn_ResNeSt_200_FPN_dcn_syncBN_all_tricks_3x.yaml of
# zhanghang1989/detectron2-ResNeSt, 50.91 box / 44.50 mask AP on COCO val2017
# (its README). Their recipe without DCN plus DEFORM_ON_PER_STAGE
# [False, True, True, True], DEFORM_MODULATED, DEFORM_NUM_GROUPS 2: DCNv2 as
# the split-attention conv of stages 2 to 4.
_base_ = ('./cascade-mask-rcnn_s200_fpn_syncbn-backbone+neck+head_'
          'all-tricks-3x_coco.py')

model = dict(
    backbone=dict(
        dcn=dict(type='DCNv2', deform_groups=2, fallback_on_stride=False),
        stage_with_dcn=(False, True, True, True)))
