# Cascade R-CNN with ResNeSt-200: the authors' detectron2 recipe
# configs/COCO-Detection/faster_cascade_rcnn_ResNeSt_200_FPN_syncbn_range-scale_1x.yaml
# of zhanghang1989/detectron2-ResNeSt, 49.03 box AP on COCO val2017 (its
# README). Their recipe is our S-101 one (mmdet's: SyncBN backbone and
# 4conv1fc box head, class-agnostic regression, RGB mean/std, train short side
# 640-800 long side <= 1333, 16 images, lr 0.02, 1x; RPN post-NMS top 2000 per
# image is already mmdet's cascade setting) plus what is stated here.
_base_ = './cascade-rcnn_s101_fpn_syncbn-backbone+head_ms-range-1x_coco.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    backbone=dict(
        depth=200,
        # activations recomputed in backward: S-200's 66 blocks at 1333 px,
        # 2 images per GPU, are meant to fit a 32 GB GPU (not measured here)
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='resnest200')),
    neck=dict(norm_cfg=norm_cfg))  # FPN.NORM: SyncBN

# TEST.PRECISE_BN (NUM_ITER 200): at the end of training, before testing
custom_hooks = [dict(type='PreciseBNHook', num_iters=200)]
