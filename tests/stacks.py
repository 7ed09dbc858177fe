"""The users' stacks the package must install into and run on, built from
the package index as their users build them.

- ``frozen``: OpenMMLab's last official releases, as most mmdet 3.x and mmseg
  1.x installs still are: Python 3.10, torch 2.1.2, numpy 1.x, mmengine
  0.10.4, mmcv 2.1.0, mmdet 3.3.0, mmsegmentation 1.2.2.
- ``onedl``: OneDL's maintained forks, which keep the import names under other
  distribution names: Python 3.12, torch 2.8.0, onedl-mmengine 0.10.12,
  onedl-mmcv 2.3.6, onedl-mmdetection 3.5.1, onedl-mmsegmentation 1.4.2.

mmcv's compiled ops must match the torch they run with, and no wheel of
either mmcv exists on the package index for these torches, so each is built
from its sdist once per (mmcv, torch, Python) into a wheel cache of our own,
keyed by all three (pip's own cache keys a build by the sdist alone, so it
would hand a wheel built against one torch to another). The cache is
``$RESNEST_MM_WHEEL_CACHE``, by default ``~/.cache/resnest_mm/wheels``.

``python tests/stacks.py NAME DIR`` builds stack NAME as a venv at DIR (what
the ``stacks`` tests do in a temporary folder); ``python tests/stacks.py
mmcv-wheels`` only fills the wheel cache (what CI does beside ``make test``).

:class:`Venv`, :func:`copy_checkout` and :func:`install_checkout` serve every
scratch environment, test_environments.py's too.
"""
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).parents[1]


@dataclass(frozen=True)
class Stack:
    """One stack: its Python and what is installed, in this order."""
    name: str
    python: str  # major.minor, found on PATH or in pyenv
    torch: str  # the torch requirement, installed first
    mmengine: str
    mmcv: tuple  # (distribution, version), built against that torch
    packages: tuple  # the rest, installed last
    constraints: tuple = ()  # held through every step


STACKS = {
    stack.name: stack
    for stack in (
        Stack(
            name='frozen',
            python='3.10',
            torch='torch==2.1.2',
            mmengine='mmengine==0.10.4',
            mmcv=('mmcv', '2.1.0'),
            # mmseg 1.2 imports ftfy and regex without declaring them
            packages=('mmdet==3.3.0', 'mmsegmentation==1.2.2', 'ftfy',
                      'regex'),
            constraints=('numpy<2', )),  # torch 2.1 is built on numpy 1
        Stack(
            name='onedl',
            python='3.12',
            torch='torch==2.8.0',
            mmengine='onedl-mmengine==0.10.12',
            mmcv=('onedl-mmcv', '2.3.6'),
            packages=('onedl-mmdetection==3.5.1',
                      'onedl-mmsegmentation==1.4.2')),
    )
}

#: The frozen stack with mmdeploy 1.3.1 and the onnxruntime its custom ops
#: library is built for (onnx and protobuf as mmdeploy pins them), for
#: test_deploy.py. Apart from STACKS: test_stacks.py runs on every stack there.
FROZEN_DEPLOY = replace(
    STACKS['frozen'],
    name='frozen-deploy',
    packages=STACKS['frozen'].packages +
    ('mmdeploy==1.3.1', 'onnxruntime==1.15.1', 'onnx==1.17.0',
     'protobuf==3.20.2'))

#: the file in each venv that holds its stack's constraints
CONSTRAINTS = 'stack-constraints.txt'
# What building mmcv's sdist needs beside torch (onedl-mmcv asks for
# setuptools>=80; mmcv 2.1.0's setup.py imports pkg_resources, gone in 81).
BUILD_TOOLS = ('setuptools==80.9.0', 'wheel', 'packaging>=24.2')


def log(msg):
    print(f'[stacks {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def find_python(version):
    """The path of a ``python<version>`` interpreter, or None.

    Looks on PATH, then in pyenv's versions (where the project's machines
    have 3.8 to 3.13), and checks that it runs and is that version.
    """
    pyenv = Path(os.environ.get('PYENV_ROOT', Path.home() / '.pyenv'))
    candidates = [shutil.which(f'python{version}')] + sorted(
        pyenv.glob(f'versions/{version}.*/bin/python{version}'))
    for candidate in filter(None, candidates):
        proc = subprocess.run([
            candidate, '-c', 'import sys, venv; '
            'print("%d.%d" % sys.version_info[:2])'
        ],
                              capture_output=True,
                              text=True)
        if proc.returncode == 0 and proc.stdout.strip() == version:
            return candidate
    return None


def wheel_cache():
    return Path(
        os.environ.get('RESNEST_MM_WHEEL_CACHE',
                       Path.home() / '.cache' / 'resnest_mm' / 'wheels'))


class Venv:
    """A virtual environment, used only through its ``python -m``: the
    scripts in bin/ of a copied venv name the original interpreter.

    Commands run in ``cwd`` (by default the venv's parent folder), outside
    the checkout, and without PYTHONPATH.
    """

    def __init__(self, path, cwd=None):
        self.path = Path(path)
        self.python = self.path / 'bin' / 'python'
        self.cwd = Path(cwd) if cwd else self.path.parent

    def run(self, *args, env=None, timeout=3600):
        """Run ``python args...``; its output, failing with it if not 0."""
        proc = subprocess.run([str(self.python), *map(str, args)],
                              env=env or clean_env(),
                              cwd=self.cwd,
                              capture_output=True,
                              text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f'{self.python} {" ".join(map(str, args))} '
                               f'exited {proc.returncode}:\n'
                               f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
        return proc.stdout

    def pip(self, *args, **kwargs):
        return self.run('-m', 'pip', *args, **kwargs)

    def install(self, *args):
        """``pip install args``, holding the stack's constraints."""
        return self.pip('install', *args, '-c', self.path / CONSTRAINTS)

    def version(self, module):
        code = f'import {module}; print({module}.__version__)'
        return self.run('-c', code).strip()

    def freeze(self):
        """``pip freeze`` less this package, as ``{name: line}``."""
        pins = {}
        for line in self.pip('freeze', '--all').splitlines():
            name = re.split(r'==| @ ', line)[0].strip()
            pins[re.sub(r'[-_.]+', '-', name).lower()] = line
        pins.pop('resnest-mm', None)
        return pins


def copy_checkout(dst):
    """A copy of the checkout at ``dst``: pip builds in place, and must not
    write into the checkout."""
    shutil.copytree(
        ROOT,
        dst,
        ignore=shutil.ignore_patterns('.venv', '.git', 'work_dirs', 'data',
                                      'build', '*.egg-info', '__pycache__'))
    return Path(dst)


def install_checkout(venv, source, extras=None):
    """``pip install <source>[extras]``; assert it changed nothing else."""
    before = venv.freeze()
    venv.pip('install', f'{source}[{extras}]' if extras else source)
    after = venv.freeze()
    assert after == before, {
        k: (before.get(k), after.get(k))
        for k in before.keys() | after.keys() if before.get(k) != after.get(k)
    }
    assert 'Location:' in venv.pip('show', 'resnest-mm')  # it is installed


def clean_env(**extra):
    """The caller's environment, less what would leak into a venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV',
                     'PIP_REQUIRE_VIRTUALENV')
    }
    env['PIP_DISABLE_PIP_VERSION_CHECK'] = '1'
    env.update(extra)
    return env


def wheel_folder(stack, torch_version):
    """The cache's folder for this stack's (mmcv, torch, Python)."""
    dist, version = stack.mmcv
    return (wheel_cache() / f'{dist}-{version}' / f'torch-{torch_version}' /
            f'py{stack.python}')


def mmcv_wheel(stack, venv):
    """The cached mmcv wheel for this stack's (mmcv, torch, Python); built
    into the cache first if missing (about 13 minutes on 2 cores). A lock
    file lets one process build it while another waits for it (a stack test
    for CI's background build)."""
    dist, version = stack.mmcv
    torch_version = venv.version('torch').split('+')[0]
    folder = wheel_folder(stack, torch_version)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / '.lock', 'w') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f'{dist} {version}: waiting for the process building it')
            fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(folder.glob('*.whl'))
        if found:
            log(f'{dist} {version}: cached wheel {found[0]}')
            return found[0]
        return _build_mmcv_wheel(stack, venv, torch_version, folder)


def _build_mmcv_wheel(stack, venv, torch_version, folder):
    """Build the wheel in ``venv`` and put it in ``folder``; its path."""
    dist, version = stack.mmcv
    log(f'building {dist} {version} with its ops against torch '
        f'{torch_version} (about 13 minutes on 2 cores; cached in {folder})')
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        # --no-cache-dir: pip's cache would return a build against another
        # torch; --no-build-isolation: build against the venv's torch.
        venv.pip(
            'wheel',
            '--no-deps',
            '--no-build-isolation',
            '--no-cache-dir',
            f'{dist}=={version}',
            '-w',
            tmp,
            env=clean_env(
                MMCV_WITH_OPS='1',
                FORCE_CUDA='0',  # CPU ops: the index's torch is a CUDA build
                MAX_JOBS=os.environ.get('MAX_JOBS', str(os.cpu_count()))))
        built = next(Path(tmp).glob('*.whl'))
        partial = folder / (built.name + '.partial')
        shutil.copy(built, partial)
        partial.rename(folder / built.name)  # never a half-written wheel
    log(f'built {built.name} in {time.monotonic() - start:.0f} s')
    return folder / built.name


def build(stack, path):
    """Create the venv of ``stack`` at ``path``; return it as a Venv."""
    start = time.monotonic()
    venv = build_until_mmcv(stack, path)
    venv.install(mmcv_wheel(stack, venv))
    log(f'{stack.name}: pip install {" ".join(stack.packages)}')
    venv.install(*stack.packages)
    venv.pip('check')
    log(f'{stack.name}: ready in {time.monotonic() - start:.0f} s')
    return venv


def build_until_mmcv(stack, path):
    """The venv of ``stack`` at ``path`` with what its mmcv builds against:
    the build tools, torch and mmengine."""
    python = find_python(stack.python)
    if python is None:
        raise FileNotFoundError(
            f'Python {stack.python} is needed for the {stack.name} stack: '
            f'install it (pyenv install {stack.python}) or put '
            f'python{stack.python} on PATH')
    log(f'{stack.name}: creating a Python {stack.python} venv at {path}')
    subprocess.run([python, '-m', 'venv', str(path)], check=True)
    venv = Venv(path)
    (venv.path / CONSTRAINTS).write_text(''.join(f'{c}\n'
                                                 for c in stack.constraints))
    for what in ([*BUILD_TOOLS], [stack.torch], [stack.mmengine]):
        log(f'{stack.name}: pip install {" ".join(what)}')
        venv.install(*what)
    return venv


def cache_mmcv_wheels():
    """Build into the cache each stack's mmcv wheel that is not there yet
    (each in a scratch venv, then removed), skipping stacks whose Python is
    missing. CI runs it in the background during ``make test``."""
    for stack in STACKS.values():
        pinned = stack.torch.partition('==')[2]
        if pinned and any(wheel_folder(stack, pinned).glob('*.whl')):
            log(f'{stack.name}: its mmcv wheel is cached')
        elif find_python(stack.python) is None:
            log(f'{stack.name}: skipped, Python {stack.python} is missing')
        else:
            with tempfile.TemporaryDirectory() as tmp:
                mmcv_wheel(stack, build_until_mmcv(stack, Path(tmp) / 'venv'))


if __name__ == '__main__':
    buildable = {**STACKS, FROZEN_DEPLOY.name: FROZEN_DEPLOY}
    if sys.argv[1:] == ['mmcv-wheels']:
        cache_mmcv_wheels()
    elif len(sys.argv) == 3 and sys.argv[1] in buildable:
        build(buildable[sys.argv[1]], Path(sys.argv[2]))
    else:
        sys.exit(f'usage: python tests/stacks.py {{{",".join(buildable)}}} '
                 'DIR\n       python tests/stacks.py mmcv-wheels')
