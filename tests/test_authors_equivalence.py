"""Each release constructor builds the authors' network (``resnest`` 0.0.5)."""
import pytest
import torch
from resnest.torch import ablation, resnest

import resnest_mm
from resnest_mm.layouts import convert_checkpoint
from resnest_mm.releases import RELEASES
from resnest_tools.references import authors_layer4
from helpers import images, randomize_, rel_err


def authors_constructor(name):
    """The authors' constructor of that name (resnest.py or ablation.py)."""
    module = resnest if name in resnest.__all__ else ablation
    return getattr(module, name)


def test_one_release_per_authors_constructor():
    assert set(RELEASES) == set(resnest.__all__) | set(ablation.__all__)


@pytest.mark.parametrize('name', RELEASES)
def test_release_matches_authors_layer4(name):
    theirs = randomize_(
        authors_constructor(name)(pretrained=False),
        calibrate_on=(8, 3, 128, 128)).eval()
    ours = getattr(resnest_mm, name)(pretrained=False).eval()
    converted = convert_checkpoint(theirs.state_dict()).state_dict
    ours.load_state_dict(converted)  # strict: every key used, none missing
    x = images((2, 3, 128, 128))
    with torch.no_grad():
        expected = authors_layer4(theirs, x)
        actual = ours(x)[-1]
    assert actual.shape == expected.shape
    assert rel_err(actual, expected) <= 1e-5
    n_theirs = sum(v.numel() for k, v in theirs.state_dict().items()
                   if not k.startswith('fc.'))
    assert sum(v.numel() for v in ours.state_dict().values()) == n_theirs
