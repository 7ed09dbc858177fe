"""Run by test_environments.py inside a scratch environment, not by pytest.

    python env_probe.py det|seg CONFIG
    python env_probe.py backbone
    python env_probe.py closure DIST...

Prints one JSON line with what it found; every check that fails raises.
It uses only the installed ``resnest_mm`` (never the checkout: the caller
runs it outside the checkout, without PYTHONPATH) and the packages there.
"""
import importlib.metadata as metadata
import json
import re
import sys

import torch


def installed(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def closure(roots):
    """The installed distributions ``roots`` need, themselves included."""
    from pip._vendor.packaging.requirements import Requirement
    seen, todo = set(), list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional one, or a marker that does not apply
        seen.add(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return sorted(seen)


def train_one_step(model, data):
    """One SGD step through mmengine's ``train_step``; return its losses."""
    from mmengine.optim import OptimWrapper
    before = [p.detach().clone() for p in model.backbone.parameters()]
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    model.train()
    log_vars = model.train_step(data, optim)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    moved = sum(not torch.equal(a, b.detach())
                for a, b in zip(before, model.backbone.parameters()))
    assert moved > 0, 'the step changed no backbone parameter'
    return {k: float(v) for k, v in log_vars.items()}, moved


def detection(config):
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config

    from resnest_tools.runner_setup import build_model
    cfg = Config.fromfile(config)
    cfg.model.train_cfg.rpn_proposal.max_per_img = 64  # speed
    for stage in (cfg.model.train_cfg.rcnn if isinstance(
            cfg.model.train_cfg.rcnn, list) else [cfg.model.train_cfg.rcnn]):
        stage.sampler.num = 32
    model = build_model(cfg)
    data = demo_mm_inputs(2, [(3, 96, 128), (3, 128, 96)], num_items=[3, 2])
    return model, data


def segmentation(config):
    from mmengine.config import Config
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from resnest_tools.runner_setup import build_model
    cfg = Config.fromfile(config)
    cfg.model.data_preprocessor.size = (64, 64)  # the recipe pads to 512x1024
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(0)
    data = dict(inputs=[], data_samples=[])
    for _ in range(2):  # ASPP's image pooling needs more than one sample
        data['inputs'].append(
            torch.randint(
                0, 256, (3, 64, 64), generator=gen, dtype=torch.uint8))
        sample = SegDataSample(
            metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 19, (1, 64, 64), generator=gen))
        data['data_samples'].append(sample)
    return model, data


def task(scope, config):
    """A config of ours builds in ``scope``'s registry and trains a step."""
    import resnest_mm
    other = {'mmdet': 'mmseg', 'mmseg': 'mmdet'}[scope]
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    ours = {'mmdet': resnest_mm.MMDetResNeSt, 'mmseg': resnest_mm.MMSegResNeSt}
    assert registry.get('ResNeSt') is ours[scope]
    try:
        __import__(other)
    except ModuleNotFoundError as err:
        assert err.name == other
    else:
        raise AssertionError(f'{other} is importable')
    build = detection if scope == 'mmdet' else segmentation
    model, data = build(config)
    assert isinstance(model.backbone, ours[scope]), type(model.backbone)
    losses, moved = train_one_step(model, data)
    return dict(losses=losses, backbone_params_changed=moved)


def backbone():
    """Every depth builds and runs; DCN asks for full mmcv."""
    for dist in ('mmcv', 'mmdet', 'mmsegmentation'):
        assert installed(dist) is None, f'{dist} is installed'
    from resnest_mm import ResNeSt
    shapes = {}
    for depth in (14, 26, 50, 101, 152, 200, 269):
        model = ResNeSt(depth=depth).eval()
        with torch.no_grad():
            outs = model(torch.randn(1, 3, 32, 32))
        shapes[depth] = [list(o.shape) for o in outs]
        assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
    model = ResNeSt(depth=14).train()
    model(torch.randn(2, 3, 32, 32))[-1].sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    dcn = dict(type='DCNv2', deform_groups=2, fallback_on_stride=False)
    try:
        ResNeSt(depth=50, dcn=dcn, stage_with_dcn=(False, True, True, True))
    except ImportError as err:
        dcn_error = str(err)
    else:
        raise AssertionError('DCNv2 built without compiled ops')
    return dict(shapes=shapes, dcn_error=dcn_error)


def main():
    kind = sys.argv[1]
    if kind == 'closure':  # before resnest_mm is installed
        print(json.dumps(closure(sys.argv[2:])))
        return
    import resnest_mm
    found = dict(
        resnest_mm=resnest_mm.__file__,
        scopes=resnest_mm.REGISTERED_SCOPES,
        versions={
            d: installed(d)
            for d in ('torch', 'mmengine', 'mmcv', 'mmcv-lite', 'mmdet',
                      'mmsegmentation', 'resnest_mm')
        })
    if kind == 'backbone':
        found.update(backbone())
    else:
        found.update(task({'det': 'mmdet', 'seg': 'mmseg'}[kind], sys.argv[2]))
    print(json.dumps(found))


if __name__ == '__main__':
    main()
