"""Loading checkpoints never runs code from them, and mmengine's own
checkpoints load again: through torch's weights-only unpickler where it takes
our allowlist (torch >= 2.6), and through our allowlisting unpickler, which
older torches use and which is tested here on every torch."""
import contextlib
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner

from resnest_mm import (ResNeSt, UnsafeCheckpointError, load_checkpoint_safely,
                        load_pretrained, safe_load)
from resnest_mm.safe_load import (MMENGINE_SAFE_GLOBALS,
                                  WEIGHTS_ONLY_EXTENSIBLE,
                                  route_mmengine_loading)
from helpers import served

needs_extensible_weights_only = pytest.mark.skipif(
    not WEIGHTS_ONLY_EXTENSIBLE,
    reason=f'torch {torch.__version__}: its weights-only unpickler takes no '
    'allowlist (torch < 2.6), so only the allowlisting unpickler is used')


@pytest.fixture(params=[
    pytest.param('weights_only', marks=needs_extensible_weights_only),
    'allowlist'
])
def loader(request, monkeypatch):
    """Each way :func:`load_checkpoint_safely` loads: torch's weights-only
    unpickler with our allowlist, or our allowlisting unpickler (what a torch
    older than 2.6 gets)."""
    monkeypatch.setattr(safe_load, 'WEIGHTS_ONLY_EXTENSIBLE',
                        request.param == 'weights_only')
    return request.param


class WritesMarker:
    """Unpickling this runs ``exec``, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({str(self.marker)!r}, "w").close()', )


class ReachesThroughGetattr:
    """Asks for ``getattr(HistoryBuffer, '__init__')``; getattr is admitted
    only for statistics."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_pickled_code_is_refused_and_never_runs(tmp_path, zip_format, loader):
    marker = tmp_path / 'code-ran'
    path = tmp_path / 'resnest50-evil.pth'
    state_dict = ResNeSt(depth=14).state_dict()
    state_dict['payload'] = WritesMarker(marker)
    torch.save(state_dict, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(
            UnsafeCheckpointError,
            match='is refused: it contains the pickled global '
            'exec, and loading it could run code'):
        load_checkpoint_safely(path)
    # through init_cfg=Pretrained as well
    with pytest.raises(UnsafeCheckpointError):
        load_pretrained(ResNeSt(depth=14), path)
    assert not marker.exists()
    if WEIGHTS_ONLY_EXTENSIBLE:  # before 2.6, torch's default load runs it
        # and torch's own default load refuses it too
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path)
        assert not marker.exists()


def test_getattr_is_admitted_only_for_history_buffer_statistics(
        tmp_path, loader):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': ReachesThroughGetattr()}, path)
    with pytest.raises(
            UnsafeCheckpointError,
            match=(r'builtins\.getattr is allowed only as '
                   r"getattr\(HistoryBuffer, "
                   r"name\).*got getattr\(.*HistoryBuffer'>, '__init__'\)")):
        load_checkpoint_safely(path)


class TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, y, mode='loss'):
        return dict(loss=((self.linear(x).squeeze(-1) - y)**2).mean())


class RecordIters(Hook):

    def __init__(self):
        self.iters = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iters.append(runner.iter)


def make_runner(work_dir, name, max_iters, **kwargs):
    data = [dict(x=torch.randn(2), y=torch.tensor(1.0)) for _ in range(8)]
    return Runner(
        model=TinyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=data,
            batch_size=2,
            collate_fn=dict(type='default_collate'),
            sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False)),
        **kwargs)


@pytest.fixture(scope='module')
def mmengine_checkpoint(tmp_path_factory):
    """A checkpoint written by mmengine's Runner: 2 iterations of a tiny
    model."""
    work_dir = tmp_path_factory.mktemp('work_dir')
    make_runner(work_dir, 'first', max_iters=2).train()
    return work_dir / 'iter_2.pth'


@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_state_dicts_and_mmengine_checkpoints_load(mmengine_checkpoint,
                                                   tmp_path, zip_format,
                                                   loader):
    model = ResNeSt(depth=14)
    path = tmp_path / 'state_dict.pth'
    torch.save(
        dict(state_dict=model.state_dict(), meta=dict(epoch=3)),
        path,
        _use_new_zipfile_serialization=zip_format)
    loaded = load_checkpoint_safely(path)
    assert loaded['meta'] == dict(epoch=3)
    assert loaded['state_dict'].keys() == model.state_dict().keys()
    assert all(
        torch.equal(loaded['state_dict'][k], v)
        for k, v in model.state_dict().items())
    checkpoint = load_checkpoint_safely(mmengine_checkpoint)
    assert checkpoint['meta']['iter'] == 2
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'],
                      HistoryBuffer)


@pytest.fixture
def routed(monkeypatch):
    """mmengine's checkpoint loading routed as our tools route it, for this
    test only."""
    monkeypatch.setattr(CheckpointLoader, '_schemes',
                        dict(CheckpointLoader._schemes))
    route_mmengine_loading()


def test_mmengine_loads_through_the_safe_loader_once_routed(
        routed, tmp_path, mmengine_checkpoint, loader, monkeypatch):
    """What our tools/train.py (--resume, load_from) and tools/test.py get:
    mmengine's own loading of files and URLs refuses code and reads its
    checkpoints (a URL served locally, cached in tmp_path)."""
    marker = tmp_path / 'code-ran'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, payload=WritesMarker(marker)), path)
    with pytest.raises(UnsafeCheckpointError, match='pickled global exec'):
        CheckpointLoader.load_checkpoint(str(path))
    assert not marker.exists()
    checkpoint = CheckpointLoader.load_checkpoint(str(mmengine_checkpoint))
    assert checkpoint['meta']['iter'] == 2
    # a URL, fetched into the torch hub cache as mmengine fetches it
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with served(tmp_path) as url:
        with pytest.raises(UnsafeCheckpointError):
            CheckpointLoader.load_checkpoint(f'{url}/evil.pth')
    assert (tmp_path / 'hub/checkpoints/evil.pth').is_file()
    assert not marker.exists()
    record = RecordIters()
    make_runner(
        tmp_path,
        'resumed',
        max_iters=3,
        resume=True,
        load_from=str(mmengine_checkpoint),
        custom_hooks=[record]).train()
    assert record.iters == [2]


@needs_extensible_weights_only
def test_still_loads_after_a_safe_globals_context_removed_ours(
        mmengine_checkpoint):
    """OneDL's mmengine wraps its loads in ``safe_globals([HistoryBuffer,
    np.ndarray, ...])``, whose exit removes those globals from torch's
    process-wide set, where importing resnest_mm had put them."""
    with torch.serialization.safe_globals([HistoryBuffer, np.ndarray]):
        pass
    checkpoint = load_checkpoint_safely(mmengine_checkpoint)
    assert checkpoint['meta']['iter'] == 2


@contextlib.contextmanager
def torch_defaults_only():
    """Without the allowlist that importing resnest_mm registers."""
    registered = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.add_safe_globals(registered)


@needs_extensible_weights_only
def test_allowlist_covers_what_mmengine_checkpoints_hold(mmengine_checkpoint):
    allowed = {
        f'{g.__module__}.{g.__qualname__}'
        if not isinstance(g, tuple) else g[1]
        for g in MMENGINE_SAFE_GLOBALS
    }
    with torch_defaults_only():
        unsafe_by_default = set(
            torch.serialization.get_unsafe_globals_in_checkpoint(
                mmengine_checkpoint))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe_by_default
    assert unsafe_by_default <= allowed
    checkpoint = load_checkpoint_safely(mmengine_checkpoint)
    assert checkpoint['meta']['iter'] == 2
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'],
                      HistoryBuffer)


@needs_extensible_weights_only
def test_without_the_allowlist_mmengine_checkpoints_fail_to_load(
        mmengine_checkpoint):
    """The torch >= 2.6 failure that importing resnest_mm fixes."""
    with torch_defaults_only(), pytest.raises(
            pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(mmengine_checkpoint)


@needs_extensible_weights_only
def test_runner_resumes_from_an_mmengine_checkpoint(mmengine_checkpoint,
                                                    tmp_path):
    """What tools/train.py --resume does: a new Runner continues at iteration
    2."""
    record = RecordIters()
    runner = make_runner(
        tmp_path,
        'resumed',
        max_iters=4,
        resume=True,
        load_from=str(mmengine_checkpoint),
        custom_hooks=[record])
    runner.train()
    assert record.iters == [2, 3]
    assert runner.iter == 4
    saved = load_checkpoint_safely(mmengine_checkpoint)
    assert np.array_equal(
        runner.message_hub.get_scalar('train/loss').data[0][:2],
        saved['message_hub']['log_scalars']['train/loss'].data[0])
