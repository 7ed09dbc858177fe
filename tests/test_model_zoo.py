"""The model zoos' trained checkpoints: a detector or segmentor trained with
mmdet's or mmseg's own ResNeSt config loads strictly into the matching config
of ours and predicts the same; the config READMEs link each to its upstream
checkpoint and log."""
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from zoo_upstream import (OUR_FOLDERS, SCOPES, build_model, our_configs,
                          upstream_configs, zoo_outputs)

from resnest_mm import MMDetResNeSt, MMSegResNeSt
from helpers import rel_err, run

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = {'mmdet': MMDetResNeSt, 'mmseg': MMSegResNeSt}
ZOO = [(scope, name) for scope in SCOPES for name in upstream_configs(scope)]


def test_every_zoo_config_has_one_of_ours():
    assert len(ZOO) == 16
    for scope in SCOPES:
        assert set(our_configs(scope)) == set(upstream_configs(scope))


@pytest.fixture(scope='module')
def zoo_checkpoints(tmp_path_factory):
    """All 16 upstream models, random weights, written by one process;
    removed afterwards (4.5 GB)."""
    out = tmp_path_factory.mktemp('zoo')
    run([sys.executable, str(ROOT / 'tests' / 'zoo_upstream.py'), str(out)])
    yield out
    shutil.rmtree(out)


@pytest.mark.parametrize('scope, name', ZOO, ids=[name for _, name in ZOO])
def test_zoo_checkpoint_loads_strictly_into_ours_and_predicts_the_same(
        zoo_checkpoints, scope, name):
    checkpoint = zoo_checkpoints / f'{name}.pth'
    reference = torch.load(zoo_checkpoints / f'{name}.outputs.pth')
    model = build_model(scope, Config.fromfile(our_configs(scope)[name]))
    assert type(model.backbone) is BACKBONES[scope]
    load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
    actual = zoo_outputs(model, reference['input'])
    assert len(actual) == len(reference['outputs'])
    for a, e in zip(actual, reference['outputs']):
        assert a.shape == e.shape
        assert rel_err(a, e) <= 1e-4


def metafile_entries(scope):
    """``{config name: metafile entry}`` of the installed zoo's metafile."""
    folder = next(iter(upstream_configs(scope).values())).parent
    metafile = next(folder.glob('metafile.y*ml'))
    return {
        Path(entry['Config']).stem: entry
        for entry in yaml.safe_load(metafile.read_text())['Models']
    }


def log_of(weights_url):
    """OpenMMLab's training log next to a checkpoint:
    ``<name>_<date>_<time>-<hash>.pth`` -> ``<name>-<date>_<time>.log.json``.
    """
    match = re.fullmatch(r'(.*)_(\d{8}_\d{6})-[0-9a-f]{8}\.pth', weights_url)
    return f'{match.group(1)}-{match.group(2)}.log.json'


@pytest.mark.parametrize('scope', SCOPES)
def test_config_readmes_link_the_upstream_checkpoint_and_log(scope):
    readme = (ROOT / 'configs' / OUR_FOLDERS[scope] / 'README.md').read_text()
    for name, entry in metafile_entries(scope).items():
        ours = our_configs(scope)[name].name
        if 'Training log' in entry:  # mmseg's metafile has them
            assert log_of(entry['Weights']) == entry['Training log']
        row = (f'| [{ours}]({ours}) | [checkpoint]({entry["Weights"]}) | '
               f'[log]({log_of(entry["Weights"])}) |')
        assert row in readme
