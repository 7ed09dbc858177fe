"""Read the scalars mmengine logs during training, across resumed runs."""
import glob
import json
import os.path as osp


def read_scalars(work_dir):
    """(train records, validation records) of every run under ``work_dir``, by
    step.

    mmengine writes ``<work_dir>/<timestamp>/vis_data/scalars.json`` per run;
    a resumed run starts a new folder, so all are read and merged, a later
    run's record replacing an earlier one at the same step.
    """
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(
            f'no */vis_data/scalars.json under {work_dir}: '
            'is it the --work-dir of a training run?')
    train, val = {}, {}
    for path in files:
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                (train if 'loss' in record else val)[record['step']] = record
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]
