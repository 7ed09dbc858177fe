"""Plot the loss and validation-metric curves of a training run.

    python tools/plot_curves.py WORK_DIR [--out WORK_DIR/curves.png]

Reads the ``vis_data/scalars.json`` that mmengine writes in each run folder
under WORK_DIR (all runs, so resumed runs join up).
"""
import argparse
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from resnest_tools.run_logs import read_scalars  # noqa: E402

METRIC_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'mIoU',
               'mAcc')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument(
        '--out', help='output image (default WORK_DIR/curves.png)')
    args = parser.parse_args()
    out = args.out or osp.join(args.work_dir, 'curves.png')
    train, val = read_scalars(args.work_dir)

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    loss_keys = [k for k in train[0] if k.startswith('loss')] if train else []
    for key in loss_keys:
        ax_loss.plot([r['step'] for r in train], [r.get(key) for r in train],
                     label=key)
    ax_loss.set(xlabel='iteration', ylabel='loss', title='training loss')
    ax_loss.legend(fontsize=8)
    for key in METRIC_KEYS:
        points = [(r['step'], r[key]) for r in val if key in r]
        if points:
            ax_metric.plot(*zip(*points), marker='o', label=key)
    ax_metric.set(
        xlabel='epoch (or iteration)', ylabel='metric', title='validation')
    ax_metric.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f'curves: {out}')
    if val:
        last = val[-1]
        print('last validation: ' +
              ', '.join(f'{k}={last[k]:.3f}'
                        for k in METRIC_KEYS if k in last))


if __name__ == '__main__':
    main()
