"""Train a detector or a segmentor; the task is read from the config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--compile] [--auto-scale-lr] [--cfg-options k=v ...]
                          [--launcher none|pytorch|slurm]

The flags are mmdet's and mmseg's, and ``--compile`` (mmengine's
``cfg.compile``). Distributed runs start through
tools/dist_train.sh (torchrun) or tools/slurm_train.sh. A run that starts from
the config's ``load_from`` (fine-tuning) lists in its log the weights the
checkpoint did not give (heads re-initialised for other classes).
"""
import argparse
import os

from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import resnest_mm  # noqa: F401  (registers ResNeSt)
from resnest_mm.safe_load import route_mmengine_loading
from resnest_tools.dataset_checks import check_datasets
from resnest_tools.fine_tuning import FineTuningReportHook
from resnest_tools.runner_setup import (add_common_args, finish_distributed,
                                        latest_checkpoint, load_config,
                                        parse_args, setup_distributed)


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a path from '
        'the latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision training')
    parser.add_argument(
        '--compile',
        action='store_true',
        help="torch.compile the model's train step (mmengine's cfg.compile); "
        'the first iterations are slow while it compiles')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the LR by the real batch size / base_batch_size')
    add_common_args(parser)
    return parse_args(parser)


def main():
    args = get_args()
    route_mmengine_loading()  # checkpoints never run code, on any torch
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    check_datasets(cfg, splits=('train', 'val'))
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.compile:
        cfg.compile = True
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError(
                f'{args.config} has no auto_scale_lr.base_batch_size; '
                'add auto_scale_lr = dict(base_batch_size=N)')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, latest_checkpoint(cfg.work_dir)
        print_log(
            f'--resume: latest complete checkpoint in {cfg.work_dir}: '
            f'{cfg.load_from or "none, starting from scratch"}',
            logger='current')
    elif args.resume is not None:
        if not os.path.isfile(args.resume):
            raise FileNotFoundError(
                f'--resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    if cfg.get('load_from') and not cfg.get('resume'):
        if '://' not in cfg.load_from and not os.path.isfile(cfg.load_from):
            raise FileNotFoundError(
                f'load_from checkpoint not found: {cfg.load_from} (set it '
                'with --cfg-options load_from=PATH)')
        cfg.custom_hooks = cfg.get(
            'custom_hooks', []) + [dict(type=FineTuningReportHook.__name__)]
    setup_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(
        cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    del runner  # its DDP wrapper holds the process group
    finish_distributed()


if __name__ == '__main__':
    main()
