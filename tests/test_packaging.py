"""What setup.py declares, the lock file, and the import-time checks.

The install itself, into environments this project did not make, is tested
in test_environments.py; these are the fast checks of the same promises.
"""
import setuptools
import subprocess
import sys
from pathlib import Path

import mmcv
import mmengine
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import resnest_mm
from resnest_mm import ResNeSt, dependencies
from helpers import ROOT

DCN = dict(type='DCNv2', deform_groups=2, fallback_on_stride=False)


@pytest.fixture(scope='module')
def setup_kwargs():
    """The arguments setup.py passes to ``setup()``, without building."""
    captured = {}
    old_setup, old_argv = setuptools.setup, sys.argv
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        sys.argv = ['setup.py']
        exec(
            compile((ROOT / 'setup.py').read_text(), 'setup.py', 'exec'), {
                '__file__': str(ROOT / 'setup.py'),
                '__name__': '__main__'
            })
    finally:
        setuptools.setup, sys.argv = old_setup, old_argv
    return captured


def names(requirements):
    return {Requirement(r).name.lower() for r in requirements}


def lock_pins():
    """``{name: version}`` of requirements/lock.txt."""
    pins = {}
    for line in (ROOT / 'requirements/lock.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            [spec] = req.specifier
            assert spec.operator == '==', line
            pins[req.name.lower().replace('_', '-')] = spec.version
    return pins


def test_install_requires_only_what_the_backbone_imports(setup_kwargs):
    """mmcv and mmengine go through mim (mminstall.txt), mmdet and mmseg are
    extras: pip never installs an OpenMMLab package over a OneDL fork."""
    install_requires = [
        Requirement(r) for r in setup_kwargs['install_requires']
    ]
    assert {r.name for r in install_requires} == {'torch', 'numpy'}
    [torch_req] = [r for r in install_requires if r.name == 'torch']
    assert '2.1.2' in torch_req.specifier  # the frozen official stack's
    mim = [Requirement(r) for r in setup_kwargs['extras_require']['mim']]
    assert {r.name for r in mim} == {'mmcv', 'mmengine'}
    [mmcv_req] = [r for r in mim if r.name == 'mmcv']
    assert '2.1.0' in mmcv_req.specifier and '2.2.0' not in mmcv_req.specifier


def test_extras(setup_kwargs):
    extras = {k: names(v) for k, v in setup_kwargs['extras_require'].items()}
    assert extras['det'] == {'mmdet'}
    assert extras['seg'] == {'mmsegmentation', 'ftfy', 'regex'}
    assert extras['onedl-det'] == {'onedl-mmdetection'}
    assert extras['onedl-seg'] == {'onedl-mmsegmentation'}
    assert extras['all'] == (
        extras['det'] | extras['seg'] | extras['tools']
        | extras['tests'])
    assert {'cityscapesscripts', 'onnx', 'onnxruntime'} <= extras['tools']
    assert 'pytest' in extras['tests']
    assert 'mmcv' not in set().union(*(v for k, v in extras.items()
                                       if k != 'mim'))
    # no extra mixes the families
    openmmlab = {'mmdet', 'mmsegmentation', 'mmengine', 'mmcv'}
    for name, requirements in extras.items():
        if name.startswith('onedl-'):
            assert not requirements & openmmlab, name
        else:
            assert not any(r.startswith('onedl-') for r in requirements)


def test_version_in_one_place(setup_kwargs):
    assert setup_kwargs['version'] == resnest_mm.__version__
    assert resnest_mm.version_info[:3] == tuple(
        int(x) for x in resnest_mm.__version__.split('.')[:3])
    assert "'0." not in (ROOT / 'setup.py').read_text()  # no second copy


def test_lock_satisfies_every_declared_range(setup_kwargs):
    """The quickstart's stack is one that setup.py's ranges accept."""
    pins = lock_pins()
    extras = setup_kwargs['extras_require']
    declared = (
        setup_kwargs['install_requires'] + extras['mim'] + extras['all'])
    for line in declared:
        req = Requirement(line)
        name = req.name.lower()
        assert name in pins, f'{name} is not in requirements/lock.txt'
        assert Version(pins[name]) in req.specifier, (line, pins[name])
    assert 'resnest-mm' not in pins
    # the linters OpenMMLab's pre-commit configs pin
    assert (pins['flake8'], pins['isort'], pins['yapf']) == ('5.0.4', '5.11.5',
                                                             '0.32.0')


def test_lock_is_what_this_environment_runs():
    """.venv, built by tools/setup.sh, has every pin of the lock installed."""
    if Path(sys.prefix).resolve() != (ROOT / '.venv').resolve():
        pytest.skip('not running in the checkout\'s .venv')
    freeze = subprocess.run([sys.executable, '-m', 'pip', 'freeze', '--all'],
                            capture_output=True,
                            text=True,
                            check=True).stdout
    installed = {}
    for line in freeze.splitlines():
        if '==' in line and not line.startswith('#'):
            name, version = line.split('==')
            installed[name.lower().replace('_', '-')] = version.split('+')[0]
    pins = lock_pins()
    assert {k: installed.get(k) for k in pins} == pins


def test_setup_sh_installs_with_the_lock_as_constraints():
    script = (ROOT / 'tools/setup.sh').read_text().replace('\\\n', ' ')
    assert 'requirements/lock.txt' in script
    for line in script.splitlines():
        if 'pip_install "' in line and 'pip_install() ' not in line:
            assert '"${LOCK[@]}"' in line or '-e "$ROOT"' in line, line


def test_missing_mmcv_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmcv', None)  # import mmcv fails
    with pytest.raises(ImportError) as err:
        dependencies.check_dependencies()
    assert 'mmcv, which is not installed' in str(err.value)
    assert 'mim install "mmcv>=2.0.0,<2.2.0"' in str(err.value)
    assert 'pip install "mmcv-lite>=2.0.0"' in str(err.value)


@pytest.mark.parametrize('package, old', [(mmcv, '1.7.2'),
                                          (mmengine, '0.6.0')])
def test_too_old_mmcv_or_mmengine_says_what_to_install(monkeypatch, package,
                                                       old):
    monkeypatch.setattr(package, '__version__', old)
    with pytest.raises(ImportError, match=f'{old} is installed') as err:
        dependencies.check_dependencies()
    assert ('mim install' if package is mmcv else 'pip install -U') in str(
        err.value)


def test_current_versions_pass():
    dependencies.check_dependencies()  # raises if not


def test_dcn_without_compiled_ops_fails_at_construction(monkeypatch):
    """As with mmcv-lite, where ``import mmcv.ops`` cannot load mmcv._ext."""
    monkeypatch.setitem(sys.modules, 'mmcv.ops', None)
    with pytest.raises(ImportError, match="needs mmcv's compiled ops") as err:
        ResNeSt(depth=50, dcn=DCN, stage_with_dcn=(False, True, True, True))
    assert 'mim install' in str(err.value)
    ResNeSt(depth=14)  # without DCN, nothing changes


def test_the_tools_usage_lines_name_configs_that_exist():
    """Every config path a tool's usage text or script names (a glob where a
    line would be too long) matches a file."""
    import re
    for tool in (ROOT / 'tools').iterdir():
        if tool.suffix not in ('.py', '.sh'):
            continue
        for path in re.findall(r'configs/[\w./*+-]+\.py', tool.read_text()):
            assert len(list(ROOT.glob(path))) == 1, (tool.name, path)


def test_the_wheel_ships_the_library_only(setup_kwargs):
    """The tools' and tests' support code (tools/resnest_tools) stays in the
    repository: the wheel's packages are resnest_mm's, and importing it loads
    nothing from tools/."""
    packages = setup_kwargs['packages']
    assert 'resnest_mm' in packages and 'resnest_mm.ops' in packages
    assert all(p.split('.')[0] == 'resnest_mm' for p in packages), packages
    code = ('import sys, resnest_mm; '
            'print(sorted(m for m in sys.modules if "tools" in m))')
    proc = subprocess.run([sys.executable, '-c', code],
                          capture_output=True,
                          text=True,
                          cwd=ROOT / 'tests',
                          check=True)
    assert 'resnest_tools' not in proc.stdout, proc.stdout
