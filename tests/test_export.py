"""The backbone under torch.fx, torch.jit.trace, torch.compile, BN folding and
ONNX (onnxruntime)."""
import copy
import inspect

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from resnest_mm import ResNeSt
from helpers import images, randomize_, rel_err, run, run_unchecked, tool

#: torch >= 2.5: tools/export_onnx.py's exporter; before, the tool refuses
DYNAMO_EXPORT = 'dynamo' in inspect.signature(torch.onnx.export).parameters
needs_dynamo_export = pytest.mark.skipif(
    not DYNAMO_EXPORT,
    reason=f'torch {torch.__version__} has no dynamo ONNX exporter: '
    'tools/export_onnx.py refuses it (tested)')


def _model():
    return randomize_(ResNeSt(depth=14))


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_fx_symbolic_trace_computes_the_same(train):
    model = _model().train(train)
    graph = torch.fx.symbolic_trace(model)
    x = images((2, 3, 64, 64))
    with torch.no_grad():
        expected, traced = model(x), graph(x)
    for a, b in zip(traced, expected):
        assert torch.equal(a, b)
    assert any(
        n.op == 'call_module' and n.target.endswith('conv2.fc1')
        for n in graph.graph.nodes)  # traced through the blocks, not one leaf


def test_jit_trace_generalises_to_other_batch_and_image_sizes():
    model = _model().eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, images((2, 3, 64, 64)))
        x = images((3, 3, 96, 80))
        for a, b in zip(traced(x), model(x)):
            assert a.shape == b.shape
            assert rel_err(a, b) <= 1e-6


def test_torch_compile_output_equals_eager():
    model = _model().eval()
    x = images((2, 3, 64, 64)).contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model)(x)
    for a, b in zip(compiled, expected):
        assert rel_err(a, b) <= 1e-5


def test_torch_compile_trains_like_eager():
    """A compiled training step: same outputs and gradients (fp64, so no ReLU
    decision flips)."""
    model = _model().double().train()
    compiled_model = copy.deepcopy(model)
    x = images((2, 3, 64, 64)).double()
    expected = model(x)
    compiled = torch.compile(compiled_model)(x)
    for out in (expected, compiled):
        sum((o * o).sum() for o in out).backward()
    for a, b in zip(compiled, expected):
        assert rel_err(a, b) <= 1e-10
    params = dict(model.named_parameters())
    for key, p in compiled_model.named_parameters():
        torch.testing.assert_close(
            p.grad, params[key].grad, rtol=1e-8, atol=1e-10)


def test_batchnorm_folds_into_the_convs_for_inference():
    """mmcv's ``fuse_conv_bn`` (what deployment uses) finds every conv-BN pair
    of ours."""
    from mmcv.cnn import fuse_conv_bn
    model = _model().eval()
    fused = fuse_conv_bn(copy.deepcopy(model))
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = images((2, 3, 64, 64))
    with torch.no_grad():
        for a, b in zip(fused(x), model(x)):
            assert rel_err(a, b) <= 1e-5


@needs_dynamo_export
def test_onnx_backbone_with_dynamic_axes_matches_pytorch(tmp_path):
    model = _model().eval()
    weights = tmp_path / 'weights.pth'
    torch.save(model.state_dict(), weights)
    out = tmp_path / 'backbone.onnx'
    log = run(
        tool('export_onnx.py') + [
            'backbone',
            str(out), '--depth', '14', '--weights',
            str(weights), '--size', '64', '64', '--dynamic'
        ])
    assert 'onnxruntime vs PyTorch' in log
    # Checked here too, on a shape the export never saw.
    session = onnxruntime.InferenceSession(
        str(out), providers=['CPUExecutionProvider'])
    x = images((3, 3, 96, 128))
    got = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        b = b.numpy()
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.parametrize(
    'config', [
        'configs/segmentation/demo/'
        'resnest_s14-d8_deeplabv3_1xb4-200_ade20k-demo-64x64.py',
        'configs/detection/demo/faster-rcnn_s14_fpn_1x_demo-shapes.py',
    ],
    ids=['segmentor', 'detector'])
@needs_dynamo_export
def test_onnx_export_of_a_config_model(tmp_path, config):
    out = tmp_path / 'model.onnx'
    log = run(
        tool('export_onnx.py') +
        [config, str(out), '--size', '64', '96'])
    err = float(log.split('max |difference| / max |output| = ')[1].split()[0])
    assert out.stat().st_size > 0 and err <= 1e-4


@pytest.mark.skipif(DYNAMO_EXPORT, reason='torch has the dynamo exporter')
def test_onnx_export_refuses_a_torch_without_the_dynamo_exporter(tmp_path):
    proc = run_unchecked(
        tool('export_onnx.py') +
        ['backbone', str(tmp_path / 'x.onnx')])
    assert proc.returncode != 0
    assert f'which torch {torch.__version__} lacks: it needs torch >= 2.5' \
        in proc.stderr
    assert not (tmp_path / 'x.onnx').exists()


@needs_dynamo_export
def test_onnx_export_refuses_a_missing_config(tmp_path):
    proc = run_unchecked(
        tool('export_onnx.py') +
        ['configs/nope.py', str(tmp_path / 'x.onnx')])
    assert proc.returncode != 0
    assert 'config file not found' in proc.stderr


@pytest.mark.parametrize('opset', [11, 'newest'])
def test_split_attention_exports_with_standard_ops_only(opset, tmp_path):
    """Opset 11 (mmdeploy's ONNX Runtime setting; TorchScript exporter, batch
    and size dynamic) and the newest opset (the dynamo exporter where torch
    has it): only standard ONNX ops, no Split or ``split_with_sizes``, and
    ONNX Runtime computes what PyTorch does, for radix 1, 2 and 4."""
    for radix in (1, 2, 4):
        model = randomize_(
            ResNeSt(depth=14, radix=radix, groups=2, base_width=16)).eval()
        x, other = images((2, 3, 64, 64)), images((3, 3, 96, 80))
        path = tmp_path / f'radix{radix}.onnx'
        names = dict(
            input_names=['x'], output_names=[f'c{i}' for i in range(4)])
        if opset == 11 or not DYNAMO_EXPORT:
            kwargs = dict(dynamo=False) if DYNAMO_EXPORT else {}
            torch.onnx.export(
                model, (x, ),
                str(path),
                opset_version=11 if opset == 11 else 17,
                dynamic_axes={'x': {
                    0: 'batch',
                    2: 'height',
                    3: 'width'
                }},
                **names,
                **kwargs)
        else:
            torch.onnx.export(model, (x, ), str(path), dynamo=True, **names)
            other = images((2, 3, 64, 64), torch.Generator().manual_seed(1))
        graph = onnx.load(str(path)).graph
        ops = {(n.domain, n.op_type) for n in graph.node}
        assert all(domain in ('', 'ai.onnx') for domain, _ in ops), ops
        assert not {op for _, op in ops} & {'Split', 'SplitToSequence'}
        session = onnxruntime.InferenceSession(str(path))
        with torch.no_grad():
            expected = model(other)
        got = session.run(None, {'x': other.numpy()})
        for a, b in zip(got, expected):
            assert rel_err(torch.from_numpy(a), b) <= 1e-5
