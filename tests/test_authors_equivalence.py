"""Same function as the authors' PyPI package ``resnest`` 0.0.5, weights
converted to our keys."""
import pytest
import torch
from resnest.torch import ablation, resnest

from resnest_mm import ResNeSt
from resnest_mm.tooling.references import authors_layer4
from resnest_mm.weights import convert_checkpoint
from helpers import images, randomize_, rel_err

MODELS = {
    # authors' constructor: our arguments
    'resnest50': (resnest.resnest50, dict(depth=50, stem_channels=64)),
    'resnest101': (resnest.resnest101, dict(depth=101, stem_channels=128)),
    'resnest200': (resnest.resnest200, dict(depth=200, stem_channels=128)),
    'resnest269': (resnest.resnest269, dict(depth=269, stem_channels=128)),
    'resnest50_fast_2s2x40d':
    (ablation.resnest50_fast_2s2x40d,
     dict(depth=50, stem_channels=64, groups=2, base_width=40,
          avd_first=True)),
    'resnest50_fast_1s1x64d':
    (ablation.resnest50_fast_1s1x64d,
     dict(depth=50, stem_channels=64, radix=1, avd_first=True)),
}


@pytest.mark.parametrize('name', MODELS)
def test_stage4_matches_authors_layer4(name):
    build_theirs, our_kwargs = MODELS[name]
    theirs = randomize_(build_theirs(), calibrate_on=(8, 3, 128, 128)).eval()
    ours = ResNeSt(**our_kwargs).eval()
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
