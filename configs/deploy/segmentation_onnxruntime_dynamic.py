# Whole segmentors to ONNX Runtime, dynamic batch and image size, opset 11:
# mmdeploy 1.3.1's configs/mmseg/segmentation_onnxruntime_dynamic.py with its
# bases folded in (mmdeploy's wheel ships no configs), exporting the logits
# (with_argmax=False) instead of the label map: mmdeploy resizes a label map to
# the original image by nearest neighbour, where mmseg resizes the logits
# bilinearly before the argmax, so only logits can be compared with mmseg.
onnx_config = dict(
    type='onnx',
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    keep_initializers_as_inputs=False,
    # optimize=True (mmdeploy's configs) needs mmdeploy's TorchScript
    # extension, which its wheel lacks: it would only warn
    dynamic_axes=dict(
        input={
            0: 'batch',
            2: 'height',
            3: 'width'
        },
        output={
            0: 'batch',
            2: 'height',
            3: 'width'
        }))
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=False)
backend_config = dict(type='onnxruntime')
