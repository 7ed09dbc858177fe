"""Check a config's datasets in seconds, without building a model.

    python tools/check_dataset.py CONFIG [--cfg-options k=v ...]

The same checks tools/train.py and tools/test.py run first (layout, an
annotation for each image, label values, classes), on every split. Exit
status 1, with what to fix, when a dataset is unusable.
"""
import argparse
import sys

from mmengine.config import DictAction

from resnest_tools.dataset_checks import CHECKS, DatasetError, check_datasets
from resnest_tools.runner_setup import load_config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    args = parser.parse_args()
    cfg = load_config(args.config, args.cfg_options)
    try:
        checked = check_datasets(cfg)
    except DatasetError as err:
        sys.exit(f'DatasetError: {err}')
    for split, dataset_type, summary in checked:
        print(f'{split} ({dataset_type}): {summary}')
    if not checked:
        print(f'{args.config} has no dataset of a checked type '
              f'({", ".join(CHECKS)})')


if __name__ == '__main__':
    main()
