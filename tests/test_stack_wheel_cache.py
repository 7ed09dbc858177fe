"""The stacks' mmcv wheel cache (tests/stacks.py): each (mmcv, torch, Python)
is built once, and a process that needs a wheel another is building waits for
it, as ``make test-stacks`` does for CI's background ``mmcv-wheels``."""
import fcntl
import threading
import time
from pathlib import Path

import pytest
import stacks
from stacks import STACKS, cache_mmcv_wheels, mmcv_wheel, wheel_folder

FROZEN = STACKS['frozen']
WHEEL = 'mmcv-2.1.0-cp310-cp310-linux_x86_64.whl'


class FakeVenv:
    """A venv with torch 2.1.2 whose ``pip wheel`` writes a wheel at once."""

    def __init__(self):
        self.builds = 0

    def version(self, module):
        assert module == 'torch'
        return '2.1.2+cu121'  # the local part is not in the cache's key

    def pip(self, *args, env=None):
        assert args[0] == 'wheel' and env['MMCV_WITH_OPS'] == '1'
        self.builds += 1
        out = args[args.index('-w') + 1]
        (Path(out) / WHEEL).write_bytes(b'built')


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('RESNEST_MM_WHEEL_CACHE', str(tmp_path))
    return tmp_path


def test_a_missing_wheel_is_built_once_then_taken_from_the_cache(cache):
    venv = FakeVenv()
    first = mmcv_wheel(FROZEN, venv)
    assert first == cache / 'mmcv-2.1.0/torch-2.1.2/py3.10' / WHEEL
    assert first.read_bytes() == b'built'
    assert mmcv_wheel(FROZEN, venv) == first
    assert venv.builds == 1
    assert [p.name for p in first.parent.iterdir()
            if p.name != '.lock'] == [WHEEL]  # no partial copy left


def test_a_wheel_another_process_is_building_is_waited_for(cache, monkeypatch):
    messages = []
    monkeypatch.setattr(stacks, 'log', messages.append)
    folder = wheel_folder(FROZEN, '2.1.2')
    folder.mkdir(parents=True)
    builder = open(folder / '.lock', 'w')  # the other process's lock
    fcntl.flock(builder, fcntl.LOCK_EX)
    venv, got = FakeVenv(), []
    waiter = threading.Thread(
        target=lambda: got.append(mmcv_wheel(FROZEN, venv)))
    waiter.start()
    deadline = time.monotonic() + 30
    while not any('waiting' in m for m in messages):
        assert time.monotonic() < deadline, messages
        time.sleep(0.01)
    (folder / WHEEL).write_bytes(b'built by the other process')
    builder.close()  # releases the lock
    waiter.join(30)
    assert got == [folder / WHEEL] and venv.builds == 0


def test_mmcv_wheels_builds_no_venv_where_every_wheel_is_cached(
        cache, monkeypatch):

    def build_until_mmcv(stack, path):
        raise AssertionError(f'built a venv for {stack.name}')

    monkeypatch.setattr(stacks, 'build_until_mmcv', build_until_mmcv)
    for stack in STACKS.values():
        folder = wheel_folder(stack, stack.torch.partition('==')[2])
        folder.mkdir(parents=True)
        (folder / f'{stack.mmcv[0]}.whl').write_bytes(b'cached')
    cache_mmcv_wheels()
