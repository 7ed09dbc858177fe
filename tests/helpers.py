"""What the tests share: random weights, relative errors, running the tools.

Imported by the tests as ``from helpers import ...`` (pytest puts ``tests/`` on
``sys.path``); ``conftest.py`` keeps only fixtures.
"""
import contextlib
import functools
import http.server
import math
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from unittest import mock

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

# ResNeSt-50's first two stages: what many tests need, at half the cost
TWO_STAGES = dict(
    num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(0, 1))


def _is_weight(t, weights):
    """Whether saved tensor ``t`` is a parameter or autocast's cast of one."""
    node = t.grad_fn
    return t.untyped_storage().data_ptr() in weights or (
        node is not None and node.name() == 'ToCopyBackward0'
        and isinstance(node.next_functions[0][0].variable, torch.nn.Parameter))


def saved_activation_bytes(model, x):
    """Bytes of the distinct activation storages autograd keeps for backward
    (weights excluded), and the output.

    Counted where the keeping is decided: by a saved-tensor hook, and inside
    our backbone, whose :class:`RecomputedActivations` hooks take precedence,
    as the tensors those store (not recipes).
    """
    import resnest_mm.ops.path
    from resnest_mm.ops.functions import RecomputedActivations

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def count(t):
        if isinstance(t, torch.Tensor) and not _is_weight(t, weights):
            storages[
                t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    class Counting(RecomputedActivations):

        def _pack(self, tensor):
            return count(super()._pack(tensor))

    with mock.patch.object(resnest_mm.ops.path, 'RecomputedActivations',
                           Counting), \
            torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        out = model(x)
    return sum(storages.values()), out


def rel_err(actual, expected):
    """Relative error ``||actual - expected|| / ||expected||``.

    L2 norm over all elements.
    """
    return ((actual - expected).norm() /
            expected.norm().clamp_min(1e-30)).item()


def images(shape, generator=None):
    """A random batch whose samples differ in brightness, contrast and
    colour, as photos do.

    Plain ``randn`` samples all pool to nearly the same vector, so the
    attention norms would only see rounding noise: a chaotic regime that no
    trained network runs in, where fp32 rounding alone changes the output.
    """
    b, c = shape[:2]
    return (torch.randn(shape, generator=generator) *
            (torch.rand(b, 1, 1, 1, generator=generator) + 0.5) +
            torch.randn(b, c, 1, 1, generator=generator))


def randomize_(model, seed=0, calibrate_on=(8, 3, 64, 64), norms_only=False):
    """Give every parameter and BN statistic a random value, as a trained
    network has.

    Zero-initialised norms or default running stats would hide differences,
    so nothing is left at its initial value. Like trained ResNets, each
    block's last norm (``bn3``) has a small scale, shrinking with the number
    of blocks as in Fixup (Zhang et al. 2019), and the running statistics
    are measured on a batch of :func:`images` of shape ``calibrate_on``
    (None: keep them random), so activations keep their scale through depth
    instead of growing block after block. ``norms_only`` leaves conv and
    linear weights as PyTorch's default init made them (random already), which
    is many times faster on whole detectors.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(t, scale=1.0, shift=0.0):
        return torch.randn(t.shape, generator=gen) * scale + shift

    n_blocks = sum(1 for name, _ in model.named_modules()
                   if name.endswith('bn3'))
    residual_scale = 0.1 * min(1.0, (16 / max(n_blocks, 1))**0.5)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and norms_only:
                continue
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * math.prod(m.kernel_size)
                m.weight.copy_(rand(m.weight, math.sqrt(2.0 / fan_in)))
                if m.bias is not None:
                    m.bias.copy_(rand(m.bias, 0.1))
            elif isinstance(m, _BatchNorm):
                m.weight.copy_(rand(m.weight, 0.2, 1.0))
                if name.endswith('bn3'):
                    m.weight.mul_(residual_scale)
                m.bias.copy_(rand(m.bias, 0.1))
                m.running_mean.copy_(rand(m.running_mean, 0.1))
                m.running_var.copy_(
                    torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(rand(m.weight, 0.01))
                m.bias.zero_()
    if calibrate_on is not None:
        _calibrate_bn_(model, images(calibrate_on, gen))
    return model


def _calibrate_bn_(model, x):
    """Set every BN's running statistics to those of ``x``'s forward pass."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    # directly: upstream's train() keeps BN in eval with norm_eval
    for m in norms:
        m.train()
        m.reset_running_stats()
        # cumulative average: after one batch, exactly its statistics
        m.momentum = None
    with torch.no_grad():
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return model


ROOT = Path(__file__).parents[1]


def tool(name):
    """The command line that runs ``tools/<name>`` with this interpreter."""
    return [sys.executable, str(ROOT / 'tools' / name)]


def run_unchecked(args, timeout=600, env=None):
    """Run ``args`` in the repository root as a user would.

    Returns the finished process.
    """
    return subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env)


def run(args, timeout=600, env=None):
    """:func:`run_unchecked`, asserting success; return the output."""
    proc = run_unchecked(args, timeout, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def kill_when(args, ready, log_path, timeout=600, cwd=ROOT, env=None):
    """Run ``args`` in ``cwd``; SIGKILL it once ``ready()`` holds.

    Its output goes to ``log_path``. Fails if the process ends before, or
    if ``ready()`` does not hold within ``timeout`` seconds.
    """
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while (not ready() and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.1)
            alive = proc.poll() is None
        finally:
            proc.kill()
            proc.wait()
    assert alive and ready(), (
        f'{args[1]} ended or was not ready in {timeout} s, before it was '
        'killed:\n' + Path(log_path).read_text()[-3000:])


@contextlib.contextmanager
def served(folder):
    """An HTTP server on localhost serving ``folder``; yields its URL."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        thread.join()


def free_port():
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def checkpoint_saved(work_dir):
    """The checkpoint mmengine's ``last_checkpoint`` names, once complete.

    None before that: mmengine writes the pointer after the checkpoint, and
    a checkpoint still being written is not yet a complete zip archive.
    """
    try:
        path = (Path(work_dir) / 'last_checkpoint').read_text().strip()
    except FileNotFoundError:
        return None
    return path if path and zipfile.is_zipfile(path) else None


def flip_tta_of_mirror_image(config, checkpoint, image, tmp_path):
    """Make ``image`` (HxWx3 uint8) left-right symmetric and predict it with
    ``config``'s model from ``checkpoint``, plainly and with flip-only TTA.

    The TTA is the config's ``tta_pipeline`` and ``tta_model`` with one
    scale, the image's own (a resize that copies exactly), and no annotations.
    Both flip views then feed the network the same pixels as plain testing.
    Returns (the mirrored image's width, the plain prediction, the merged
    TTA prediction, the views' flip flags in the TTA's order).
    """
    import numpy as np
    from mmengine.config import Config
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.runner import load_checkpoint
    from PIL import Image

    from resnest_tools.runner_setup import build_model
    from resnest_tools.tta import use_tta

    half = image[:, :image.shape[1] // 2]
    mirrored = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], 1))
    path = tmp_path / 'mirrored.png'  # lossless: stays symmetric
    Image.fromarray(mirrored).save(path)
    height, width = mirrored.shape[:2]

    cfg = Config.fromfile(config)
    tta = cfg.tta_pipeline[-1]
    flips = next(g for g in tta.transforms if g[0]['type'] == 'RandomFlip')
    pack = tta.transforms[-1]
    own_size = dict(type='Resize', scale=(width, height), keep_ratio=True)
    tta.transforms = [[own_size], flips, pack]
    use_tta(cfg)
    model = build_model(cfg).eval()
    load_checkpoint(model, str(checkpoint), map_location='cpu')
    unflipped = next(f for f in flips if f['prob'] == 0)
    plain = Compose([cfg.tta_pipeline[0], own_size, unflipped, *pack])

    def predict(net, pipeline):
        data = pseudo_collate([pipeline(dict(img_path=str(path), img_id=0))])
        with torch.no_grad():
            return net.test_step(data)[0]

    return (width, predict(model.module,
                           plain), predict(model, Compose(cfg.tta_pipeline)),
            [f['prob'] == 1 for f in flips])


DETECTION_DEMO = ROOT / 'configs/detection/demo/' \
    'faster-rcnn_s14_fpn_1x_demo-shapes.py'
# A detection config that trains a base for a few iterations on tiny data.
TINY_DETECTION = '''
_base_ = '{base}'
data_root = '{data_root}/'
{extra}
train_dataloader = dict(
    batch_size={batch}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, {train_dataset}))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, {val_dataset}))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/{annotations}_val2017.json', {evaluator})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0)
'''


def tiny_detection_config(tmp_path,
                          data_root,
                          base=DETECTION_DEMO,
                          batch=2,
                          epochs=3,
                          extra='',
                          train_dataset='',
                          val_dataset='',
                          evaluator='',
                          annotations='instances'):
    """A config that trains ``base`` on the tiny data for a few iterations.

    ``annotations``: the evaluator's, ``instances`` or ``panoptic``.
    """
    path = tmp_path / f'tiny_{Path(base).stem}.py'
    path.write_text(
        TINY_DETECTION.format(
            base=base,
            data_root=data_root,
            batch=batch,
            epochs=epochs,
            extra=extra,
            train_dataset=train_dataset,
            val_dataset=val_dataset,
            evaluator=evaluator,
            annotations=annotations))
    return str(path)


# A segmentation config of a base on tiny data: 4 iterations, checkpoints at 2.
TINY_SEGMENTATION = '''
_base_ = '{base}'
data_root = '{data_root}'
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
randomness = dict(seed=0)
'''
