"""What tools/train.py and tools/test.py share: loading a config, knowing its
task, distributed set-up."""
import gc
import glob
import os
import os.path as osp
import zipfile

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from resnest_mm import resolve_forked_scopes

#: default_scope of a config -> the task it trains
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}


def add_common_args(parser):
    """The flags train.py and test.py share: --cfg-options, --launcher,
    --local-rank."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args(parser):
    """Parse, and give torch.distributed.launch's --local-rank to the
    environment."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(path, cfg_options=None, work_dir=None):
    """Load ``path``, apply ``--cfg-options`` and the work dir; check that the
    task is known.

    The work dir is, by priority, ``work_dir``, the config's own, or
    ``work_dirs/<config name>``, as in mmdet's and mmseg's tools.
    ``mmdet::``/``mmseg::`` bases resolve to whichever distribution provides
    the module (:func:`resnest_mm.resolve_forked_scopes`).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'config file not found: {path!r}. Ready configs are under '
            'configs/detection/ and configs/segmentation/.')
    resolve_forked_scopes()
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    task_of(cfg, path)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def task_of(cfg, path='the config'):
    """``'detection'`` or ``'segmentation'``, read from the config's
    ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(
            f'{path}: default_scope is {scope!r}, so the task is unknown. '
            'Inherit '
            "an mmdet or mmseg base config (they set default_scope='mmdet' or "
            "'mmseg'), or set default_scope yourself.")
    return TASKS[scope]


def build_model(cfg):
    """``cfg.model`` from its task's registry, for one process (SyncBN as BN).

    ``init_weights`` is not called, so no pretrained weights are downloaded:
    the weights are as constructed until a checkpoint is loaded.
    """
    init_default_scope(cfg.default_scope)
    if task_of(cfg) == 'detection':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def setup_distributed(cfg, launcher):
    """Prepare ``cfg`` for ``launcher``; on machines without CUDA, run on gloo.

    mmengine's ``init_dist`` selects a CUDA device and NCCL, which fails on a
    CPU-only build, so there we start the gloo process group that torchrun's
    environment describes (the Runner then uses it), turn SyncBN (CUDA-only)
    into BN, and wrap the model in DDP without device ids.
    """
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return cfg
    if launcher != 'pytorch':
        raise RuntimeError(f"--launcher {launcher} needs CUDA; on a CPU-only "
                           "machine use torchrun with --launcher pytorch")
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.model = _sync_bn_to_bn(cfg.model)
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallel',
        device_ids=None,
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    print_log(
        'No CUDA: distributed on gloo over '
        f'{dist.get_world_size()} processes, '
        'SyncBN layers built as BN.',
        logger='current')
    return cfg


def finish_distributed():
    """Tear down the process group, if any, before the interpreter exits.

    Left to interpreter shutdown, gloo's worker threads are sometimes
    destroyed while still running, and the process aborts ("terminate called
    without an active exception") after a finished run. The barrier first:
    no rank tears down its gloo pairs while another still talks to it. The
    caller drops its runner first: the DDP wrapper's reducer holds the group,
    which would otherwise outlive ``destroy_process_group`` until shutdown
    (collected here, so that the group's threads are joined now).
    """
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _sync_bn_to_bn(node):
    if isinstance(node, dict):
        node = type(node)({k: _sync_bn_to_bn(v) for k, v in node.items()})
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        return node
    if isinstance(node, (list, tuple)):
        return type(node)(_sync_bn_to_bn(v) for v in node)
    return node


def latest_checkpoint(work_dir):
    """The newest complete ``epoch_*.pth``/``iter_*.pth`` in ``work_dir``, or
    None.

    mmengine's auto-resume reads only the ``last_checkpoint`` pointer, which it
    writes after the checkpoint: a run killed in between would restart from
    scratch. A run killed while saving leaves a truncated file; torch's zip
    format makes that detectable (no end-of-archive record), so it is skipped.
    """
    candidates = glob.glob(osp.join(work_dir, 'epoch_*.pth')) + glob.glob(
        osp.join(work_dir, 'iter_*.pth'))
    for path in sorted(candidates, key=osp.getmtime, reverse=True):
        if zipfile.is_zipfile(path):
            return path
    return None
