# Panoptic FPN with ResNeSt-50 on COCO panoptic: mmdet's
# panoptic_fpn/panoptic-fpn_r50_fpn_ms-3x_coco.py (R-50: 42.5 PQ, mmdet's
# metafile) with the ResNeSt changes mmdet's own ResNeSt recipes make (SyncBN
# backbone, norms trained, RGB mean/std, SyncBN 4conv1fc box head and mask
# head) and two from the authors' detectron2 Panoptic FPN S-200
# (configs/COCO-PanopticSegmentation/panoptic_ResNeSt_200_FPN_syncBN_tricks_3x
# .yaml, 47.90 PQ): SyncBN in the semantic head, precise BN. No result is
# published for S-50. mmdet 3.3 has no test-time augmentation for panoptic
# models (DetTTAModel merges boxes only), so no tta_model.
_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_ms-3x_coco.py'
custom_imports = dict(imports=['resnest_mm'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)

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
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='resnest50')),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)),
    semantic_head=dict(norm_cfg=dict(_delete_=True, **norm_cfg)))  # was GN

# TEST.PRECISE_BN (NUM_ITER 200): at the end of training, before testing
custom_hooks = [dict(type='PreciseBNHook', num_iters=200)]
