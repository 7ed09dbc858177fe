"""The package installs into environments this project did not make.

Three scratch environments, each built in a temporary folder in about a
minute and never with another mmcv build:

- ``det``: mmdet 3.2.0 and mmengine 0.10.5 (not the lock's), no mmseg;
- ``seg``: mmsegmentation 1.2.1 and mmengine 0.10.5, no mmdet;
- ``backbone``: torch, mmengine 0.10.5 and mmcv-lite 2.1.0 with what they
  require, and nothing else (no mmcv, mmdet or mmseg).

Each starts from a hard-linked copy (``cp -al``; ``cp -a`` across file
systems) of the venv these tests run in, the quickstart's .venv, so
``det`` and ``seg`` keep its compiled mmcv and none reinstalls torch; pip
replaces files by unlinking, never by writing into them, so the original
is untouched. ``backbone`` then drops every distribution that torch,
mmengine and mmcv-lite do not require. In each,
``pip install`` of a copy of the checkout (not editable) must change
nothing already installed, and a config of ours must train one step, run
by env_probe.py outside the checkout with no PYTHONPATH.

Marked ``envs``: ``pytest -m "not envs"`` leaves them out. They need the
package index (or pip's cache) for mmdet 3.2.0, mmseg 1.2.1, mmengine
0.10.5, mmcv-lite 2.1.0 and setuptools for the build.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stacks import Venv, copy_checkout, install_checkout

from helpers import ROOT

pytestmark = pytest.mark.envs

DET_CONFIG = 'configs/detection/faster-rcnn_s50_fpn_syncbn-backbone+head_' \
    'ms-range-1x_coco.py'
SEG_CONFIG = 'configs/segmentation/resnest_s50-d8_deeplabv3_4xb2-80k_' \
    'cityscapes-512x1024.py'


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    return copy_checkout(tmp_path_factory.mktemp('src') / 'resnest-mm')


@pytest.fixture
def scratch(tmp_path_factory, request):
    """A folder for one environment, removed afterwards (a venv is ~1 GB)."""
    path = tmp_path_factory.mktemp(request.node.name[5:20])
    yield path
    shutil.rmtree(path, ignore_errors=True)


def reference_venv():
    """The venv running these tests (the quickstart's .venv under make)."""
    if sys.prefix == sys.base_prefix:
        pytest.skip('the tests do not run in a virtual environment to copy')
    return Path(sys.prefix)


def copy_venv(dst):
    """Hard-link a copy of the reference venv at ``dst``, in seconds."""
    src = reference_venv()
    if subprocess.run(['cp', '-al', src, dst]).returncode != 0:
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(['cp', '-a', src, dst], check=True)  # another fs
    return Venv(dst)


def constraints(env, path):
    """Pin the env's mmcv: no install may replace it (that means a build)."""
    mmcv = env.freeze()['mmcv']
    path.write_text(mmcv + '\n')
    return ['-c', path]


def probe_output(env, *args):
    """Run env_probe.py in ``env`` outside the checkout; its JSON result."""
    shutil.copy(ROOT / 'tests' / 'env_probe.py', env.cwd / 'env_probe.py')
    # the tools' support package beside it (the installed wheel has none)
    shutil.copytree(
        ROOT / 'tools' / 'resnest_tools',
        env.cwd / 'resnest_tools',
        dirs_exist_ok=True)
    out = env.run(env.cwd / 'env_probe.py', *args)
    return json.loads(out.strip().splitlines()[-1])


def probe(env, *args):
    """:func:`probe_output`, checking that the installed copy ran."""
    found = probe_output(env, *args)
    print(json.dumps({k: found[k] for k in found if k != 'shapes'}))
    # the installed copy, not the checkout
    assert str(env.path) in found['resnest_mm'], found['resnest_mm']
    return found


def openmmlab_env(scratch, remove, install):
    """The reference venv less ``remove`` and resnest_mm, plus ``install``."""
    env = copy_venv(scratch / 'venv')
    env.pip('uninstall', '-y', 'resnest_mm', *remove)
    pin_mmcv = constraints(env, env.cwd / 'constraints.txt')
    env.pip('install', *install, *pin_mmcv)
    env.pip('check')  # a consistent environment to start from
    return env


# extra: (config, its package's registry scope, what to uninstall, the
# versions the env must end with: another mmdet/mmseg and mmengine than the
# lock's, and the other task's package absent)
# The packages the quickstart installs with --no-deps (the tests' references,
# panopticapi-lite) go too: their declared requirements fail `pip check`.
NO_DEPS = ['mmpretrain', 'resnest', 'panopticapi-lite']
OPENMMLAB_STACKS = {
    'det': (DET_CONFIG, 'mmdet', ['mmsegmentation', *NO_DEPS],
            dict(mmdet='3.2.0', mmengine='0.10.5', mmsegmentation=None)),
    'seg': (SEG_CONFIG, 'mmseg', ['mmdet', *NO_DEPS],
            dict(mmsegmentation='1.2.1', mmengine='0.10.5', mmdet=None)),
}


@pytest.mark.parametrize('extra', list(OPENMMLAB_STACKS))
def test_mmdet_or_mmseg_only_environment(scratch, source, extra):
    config, scope, remove, versions = OPENMMLAB_STACKS[extra]
    env = openmmlab_env(
        scratch,
        remove=remove,
        install=[f'{k}=={v}' for k, v in versions.items() if v])
    install_checkout(env, source, extra)
    found = probe(env, extra, source / config)
    assert {k: found['versions'][k] for k in versions} == versions
    assert found['scopes'] == [scope]
    assert found['losses']['loss'] > 0 and found['backbone_params_changed']


def test_backbone_only_environment_with_mmcv_lite(scratch, source):
    """No compiled ops: every depth runs, DCNv2 asks for full mmcv."""
    env = copy_venv(scratch / 'venv')
    env.pip('uninstall', '-y', 'resnest_mm', 'mmcv', 'mmdet', 'mmsegmentation',
            'mmpretrain', 'resnest')
    env.pip('install', 'mmengine==0.10.5', 'mmcv-lite==2.1.0')
    keep = set(
        probe_output(env, 'closure', 'torch', 'mmengine', 'mmcv-lite', 'pip',
                     'setuptools', 'wheel'))
    env.pip('uninstall', '-y', *sorted(env.freeze().keys() - keep))
    assert env.freeze().keys() == keep
    env.pip('check')  # nothing that stays misses a requirement
    install_checkout(env, source, None)
    found = probe(env, 'backbone')
    versions = found['versions']
    assert versions['mmcv-lite'] == '2.1.0' and versions['mmcv'] is None
    assert found['scopes'] == []
    assert set(
        found['shapes']) == {'14', '26', '50', '101', '152', '200', '269'}
    assert "needs mmcv's compiled ops" in found['dcn_error']
    assert 'mim install "mmcv' in found['dcn_error']
