"""The fine-tuning report of tools/train.py (FineTuningReportHook) on small
modules: what it lists, and the checkpoint it refuses."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from resnest_tools import fine_tuning


class Detector(nn.Module):
    """A stand-in: a body, and a classifier whose shape follows the
    classes."""

    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.cls = nn.Linear(4, num_classes)


def run_hook(model, checkpoint, tmp_path, monkeypatch, resume=False):
    """Run the hook as the Runner does before training; return what it
    logged."""
    path = tmp_path / 'checkpoint.pth'
    torch.save({'state_dict': checkpoint.state_dict()}, path)
    runner = SimpleNamespace(
        cfg=Config(dict(load_from=str(path), resume=resume)), model=model)
    logged = []
    monkeypatch.setattr(fine_tuning, 'print_log',
                        lambda message, logger: logged.append(message))
    fine_tuning.FineTuningReportHook().before_train(runner)
    return logged


def test_lists_the_reinitialised_head(tmp_path, monkeypatch):
    [message] = run_hook(Detector(2), Detector(5), tmp_path, monkeypatch)
    assert message.endswith(
        '2 of 4 tensors loaded; re-initialised, shape differs from the '
        'checkpoint: 2 (cls.weight (5, 4) -> (2, 4), cls.bias (5,) -> '
        '(2,)); initialised, not in the checkpoint: none; unused from the '
        'checkpoint: none')


def test_refuses_a_checkpoint_that_fills_nothing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match='none of its tensors fits the model'):
        run_hook(nn.Linear(3, 3), Detector(2), tmp_path, monkeypatch)


def test_says_nothing_when_resuming(tmp_path, monkeypatch):
    assert run_hook(
        nn.Linear(3, 3), Detector(2), tmp_path, monkeypatch,
        resume=True) == []
