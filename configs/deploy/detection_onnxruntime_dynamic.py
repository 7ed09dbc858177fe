# Whole detectors to ONNX Runtime, dynamic batch and image size, opset 11:
# mmdeploy 1.3.1's configs/mmdet/detection/detection_onnxruntime_dynamic.py
# with its bases folded in (mmdeploy's wheel ships no configs). Used by
# tools/deploy.py; docs/deploy.md says what was measured with it.
onnx_config = dict(
    type='onnx',
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['dets', 'labels'],
    keep_initializers_as_inputs=False,
    # optimize=True (mmdeploy's configs) needs mmdeploy's TorchScript
    # extension, which its wheel lacks: it would only warn
    dynamic_axes=dict(
        input={
            0: 'batch',
            2: 'height',
            3: 'width'
        },
        dets={
            0: 'batch',
            1: 'num_dets'
        },
        labels={
            0: 'batch',
            1: 'num_dets'
        }))
# The model's test_cfg wins where it sets the same (score_thr, nms
# iou_threshold, max_per_img); see docs/deploy.md.
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        iou_threshold=0.5,
        max_output_boxes_per_class=200,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1))
backend_config = dict(type='onnxruntime')
