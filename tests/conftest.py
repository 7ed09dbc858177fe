"""Fixtures for every test; the shared helpers are in ``helpers.py``."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'envs: builds scratch environments to install into '
        '(test_environments.py; about a minute each); -m "not envs" skips')
