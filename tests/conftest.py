"""Fixtures for every test; the shared helpers are in ``helpers.py``."""
import urllib.error

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The torch hub cache in tmp_path; every download fails as offline."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError('[Errno -2] Name or service not known')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    return tmp_path / 'hub' / 'checkpoints'


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'envs: builds scratch environments to install into '
        '(test_environments.py; about a minute each); -m "not envs" skips')
    config.addinivalue_line(
        'markers', 'stacks: builds the users\' stacks from the package index '
        '(test_stacks.py; minutes each); make test leaves them out')
