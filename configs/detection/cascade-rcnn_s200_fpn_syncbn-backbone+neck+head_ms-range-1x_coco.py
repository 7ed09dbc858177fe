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

# test-time augmentation (tools/test.py --tta): mmdet's usual flip x 3 scales
tta_model = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=s, keep_ratio=True)
                for s in [(1333, 800), (666, 400), (2000, 1200)]
            ],
            [
                dict(type='RandomFlip', prob=1.),
                dict(type='RandomFlip', prob=0.)
            ],
            [dict(type='LoadAnnotations', with_bbox=True)],
            [
                dict(
                    type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                               'scale_factor', 'flip', 'flip_direction'))
            ],
        ])
]
