"""Evaluate a checkpoint of a detector or a segmentor; the task is read from
the config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
                         [--show-dir DIR] [--show] [--cfg-options k=v ...]
                         [--launcher none|pytorch|slurm] [--tta]
                         [--fuse-conv-bn]

``--out``: detection dumps predictions to a .pkl file (as mmdet); segmentation
writes predicted label maps to that folder (as mmseg). ``--show-dir``: painted
predictions, next to the ground truth, under the run's log folder. ``--tta``:
test-time augmentation with the config's ``tta_model`` and ``tta_pipeline``
(as mmdet's and mmseg's ``--tta``); the log names the scales and flips.
``--fuse-conv-bn``: fold each BatchNorm into the convolution before it
(``mmcv.cnn.fuse_conv_bn``, as mmdet's benchmark does) once the checkpoint is
loaded: the same predictions up to float rounding, one pass less over each
normalised feature map.

CHECKPOINT is a path or an http(s) URL (e.g. a model zoo's checkpoint): a URL
is downloaded once into the torch hub cache, as mmengine does; offline, the
error names the URL and where to put the file.
"""
import argparse
import os

from mmcv.cnn import fuse_conv_bn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import resnest_mm  # noqa: F401  (registers ResNeSt)
from resnest_mm.downloads import download_checkpoint
from resnest_mm.safe_load import route_mmengine_loading
from resnest_tools.dataset_checks import check_datasets
from resnest_tools.runner_setup import (add_common_args, finish_distributed,
                                        load_config, parse_args,
                                        setup_distributed, task_of)
from resnest_tools.tta import use_tta


def get_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file or http(s) URL')
    parser.add_argument('--work-dir', help='the dir to save the metrics')
    parser.add_argument(
        '--out',
        help='detection: .pkl of predictions; '
        'segmentation: folder for predicted label maps')
    parser.add_argument('--show', action='store_true', help='show predictions')
    parser.add_argument('--show-dir', help='folder for painted predictions')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='--show interval (s)')
    parser.add_argument(
        '--tta',
        action='store_true',
        help="test-time augmentation: the config's tta_model and "
        'tta_pipeline')
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='fold BatchNorms into the preceding convolutions (faster)')
    add_common_args(parser)
    return parse_args(parser)


def enable_visualization(cfg, args, task):
    """Turn on the visualization hook, as mmdet's and mmseg's test tools do."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need a visualization hook in '
                         'default_hooks (the mmdet and mmseg bases have one)')
    hook['draw'] = True
    if args.show:
        hook['show'], hook['wait_time'] = True, args.wait_time
    if args.show_dir:
        if task == 'detection':
            hook['test_out_dir'] = args.show_dir
        else:
            cfg.visualizer['save_dir'] = args.show_dir


class FuseConvBNHook(Hook):
    """``--fuse-conv-bn``: fold each BatchNorm into the conv before it.

    At ``before_test``, which the test loop calls after the Runner has
    loaded the checkpoint (``Runner.test``'s ``load_or_resume``): fused
    earlier, the checkpoint's BatchNorm entries would have nowhere to go.
    """

    def before_test(self, runner):
        runner.model = fuse_conv_bn(runner.model)
        print_log(
            '--fuse-conv-bn: BatchNorms folded into their convolutions',
            logger='current')


def main():
    args = get_args()
    route_mmengine_loading()  # checkpoints never run code, on any torch
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    task = task_of(cfg)
    checkpoint = args.checkpoint
    if checkpoint.startswith(('http://', 'https://')):
        checkpoint = download_checkpoint(checkpoint)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    check_datasets(cfg, splits=('test', ))
    cfg.load_from = checkpoint
    if args.tta:
        tta = use_tta(cfg, args.config)
    if args.show or args.show_dir:
        enable_visualization(cfg, args, task)
    if args.out and task == 'segmentation':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    if args.out and task == 'detection' and not args.out.endswith((
            '.pkl',
            '.pickle',
    )):
        raise ValueError(
            f'--out must be a .pkl file for detection, got {args.out}')
    setup_distributed(cfg, args.launcher)
    runner = (
        Runner.from_cfg(cfg)
        if 'runner_type' not in cfg else RUNNERS.build(cfg))
    if args.tta:
        print_log(f'--tta: {tta}', logger='current')
    if args.out and task == 'detection':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    if args.fuse_conv_bn:
        runner.register_hook(FuseConvBNHook())
    runner.test()
    del runner  # its DDP wrapper holds the process group
    finish_distributed()


if __name__ == '__main__':
    main()
