"""tools/benchmark.py end to end on a tiny input: what it reports, not how fast
(no timing asserts)."""
import inspect
import json
import os

import pytest
import torch

from resnest_tools.benchmark.backbones import THRESHOLDS
from resnest_tools.benchmark.models import (FUSED_SUFFIX, NO_RECOMPUTE_SUFFIX,
                                            base_name, build_models,
                                            check_same_function)
from helpers import run, run_unchecked, tool

#: torch >= 2.5: the exporter of tools/export_onnx.py, which --onnx uses
DYNAMO_EXPORT = 'dynamo' in inspect.signature(torch.onnx.export).parameters


def test_benchmark_reports_every_model_and_the_detector(tmp_path):
    """With the conv-bn fused variants and, where torch exports with dynamo,
    the ONNX Runtime section."""
    out = tmp_path / 'bench.json'
    onnx = ['--onnx', '--onnx-size', '64'] if DYNAMO_EXPORT else []
    log = run(
        tool('benchmark.py') + [
            '--batch', '2', '--size', '64', '--warmup', '0', '--repeat', '1',
            '--det-size', '64', '--fuse-conv-bn', '--json',
            str(out)
        ] + onnx)
    results = json.loads(out.read_text())
    fused = {'ours' + FUSED_SUFFIX, 'upstream mmdet' + FUSED_SUFFIX}
    names = {'ours', 'upstream mmdet', 'authors', 'ResNet-50 (mmdet)'}
    assert set(results['backbones']) == names | fused
    # the ResNeSts got the same weights and compute the same function; fused,
    # up to rounding
    assert set(
        results['same_function']) == {'upstream mmdet', 'authors'} | fused
    assert all(err <= 1e-5 for err in results['same_function'].values())
    for name, r in results['backbones'].items():
        assert set(r['layouts']) == {'nchw', 'channels_last'}
        assert r['infer_img_s'] > 0 and r['latency_ms'] > 0
        if name in fused:  # inference only: no BatchNorm left to train
            assert r['train_img_s'] is None and r['train_peak_mib'] is None
            assert r['train_rss_mib'] is None
        else:
            assert r['train_img_s'] > 0
            # both measured in child processes on Linux: with glibc's
            # thresholds set, and the resident set under its default
            assert r['train_peak_mib'] > 0 and r['train_rss_mib'] > 0
            assert all(v['train_rss_mib'] > 0 for v in r['layouts'].values())
        assert r['infer_img_s'] == max(v['infer_img_s']
                                       for v in r['layouts'].values())
    # one architecture, the same multiply-adds (up to the pooling, counted
    # differently per op); ResNet-50 has fewer
    gmacs = {n: r['gmacs'] for n, r in results['backbones'].items()}
    assert gmacs['ours'] == pytest.approx(gmacs['upstream mmdet'], rel=1e-3)
    assert gmacs['ours'] == pytest.approx(gmacs['authors'], rel=1e-3)
    assert gmacs['ours'] > 1.2 * gmacs['ResNet-50 (mmdet)']
    assert set(results['detector']) == {'ours', 'upstream mmdet'} | fused
    assert all('train_step_s' not in results['detector'][n] for n in fused)
    assert results['matmul_peak_gflops'] > 0
    assert 'ratios are to upstream mmdet' in log
    assert 'train RSS MiB' in log and "glibc's default allocator" in log
    assert 'conv-bn fused / unfused inference time' in log
    if DYNAMO_EXPORT:
        assert 'detector is exported and timed up to its neck' in log
        onnx = results['onnx']
        assert len(onnx) == 2  # the segmentor, the detector to its neck
        for what, upstream in zip(onnx, ('upstream mmseg', 'upstream mmdet')):
            assert set(onnx[what]) == {'ours', upstream, 'ours/upstream'}
            for r in (onnx[what]['ours'], onnx[what][upstream]):
                assert r['ort_rel_err'] <= 1e-4  # the exporter's own check
                assert r['ort_vs_eager'] > 0 and r['fused_vs_eager'] > 0
                assert r['eager_layout'] in ('nchw', 'channels_last')
            assert all(v > 0 for v in onnx[what]['ours/upstream'].values())


def test_cpu_autocast_reports_the_backbones_and_leaves_the_detector_out(
        tmp_path):
    """mmcv's CPU NMS has no bfloat16 kernel: the detector would fail after
    the backbones' run."""
    out = tmp_path / 'bench.json'
    log = run(
        tool('benchmark.py') + [
            '--amp', '--batch', '2', '--size', '64', '--warmup', '0',
            '--repeat', '1', '--layouts', 'channels_last', '--det-size', '64',
            '--json',
            str(out)
        ])
    results = json.loads(out.read_text())
    assert results['settings']['amp_dtype'] == 'bfloat16'
    assert 'ours' in results['backbones'] and 'detector' not in results
    assert "Faster R-CNN left out: under autocast on the CPU" in log


def test_the_memory_child_reports_both_measures():
    """``--peak-memory-of``: the step's peak (run with glibc's thresholds by
    the parent) and the resident set's rise, each positive; the thresholds
    set here, the first is what a GPU's caching allocator would peak at."""
    env = dict(os.environ, **THRESHOLDS)
    proc = run_unchecked(
        tool('benchmark.py') + [
            '--batch', '2', '--size', '32', '--layouts', 'channels_last',
            '--peak-memory-of', 'ours'
        ],
        env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {'train_peak_mib', 'train_rss_mib'}
    assert result['train_peak_mib'] > 0 and result['train_rss_mib'] > 0


def test_a_variant_is_its_model_with_one_setting_changed():
    """``--no-recompute``'s model: ours' weights, the switch off, counted as
    ours."""
    models = build_models(50, no_recompute=True)
    name = 'ours' + NO_RECOMPUTE_SUFFIX
    ours, variant = models['ours'], models[name]
    assert base_name(name) == 'ours'
    assert ours.recompute_activations and not variant.recompute_activations
    for (key, a), b in zip(ours.state_dict().items(),
                           variant.state_dict().values()):
        assert torch.equal(a, b), key
    # variants are not compared again: they are their model
    same = check_same_function(models, torch.randn(2, 3, 32, 32))
    assert set(same) == {'upstream mmdet', 'authors'}


@pytest.mark.parametrize(
    'args, message', [(['--batch', '1'], 'at least 2'),
                      (['--syncbn'], 'torchrun --nproc-per-node 2')],
    ids=['batch-upstream-cannot-train', 'syncbn-without-gpus'])
def test_benchmark_refuses_what_it_cannot_run(args, message):
    proc = run_unchecked(tool('benchmark.py') + args)
    assert proc.returncode == 2 and message in proc.stderr
