"""Release constructors: weights by short name, overrides, clear errors.

That each builds the authors' network is tested in
``test_authors_equivalence.py``.
"""
import dataclasses
import hashlib
import inspect
import os

import pytest
import torch
from resnest.torch import ablation, resnest

import resnest_mm
from resnest_mm import releases
from resnest_mm.releases import RELEASES, build_release
from resnest_tools.references import authors_layer4
from helpers import images, randomize_, rel_err

AUTHORS_URLS = {**resnest.resnest_model_urls, **ablation.resnest_model_urls}


def test_every_release_has_the_authors_published_file():
    """The file names (hash included) are those the authors' package gets."""
    assert set(RELEASES) == set(AUTHORS_URLS)
    for name, url in AUTHORS_URLS.items():
        assert RELEASES[name].file == os.path.basename(url)


def test_constructors_and_exports_are_the_release_table():
    """One constructor per record, of its name, documented from it and
    exported from ``resnest_mm``; and no constructor without a record."""
    constructors = {
        name
        for name, value in vars(releases).items()
        if inspect.isfunction(value) and value.__module__ == releases.__name__
        and not name.startswith('_') and name != 'build_release'
    }
    assert constructors == set(RELEASES)
    for name, release in RELEASES.items():
        constructor = getattr(resnest_mm, name)
        assert constructor is getattr(releases, name)
        assert constructor.__name__ == constructor.__qualname__ == name
        assert constructor.__doc__.startswith(release.description)
        assert name in resnest_mm.__all__
    assert str(inspect.signature(resnest_mm.resnest50)) == (
        "(pretrained: bool = False, **kwargs: Any) -> 'ResNeSt'")
    assert RELEASES['resnest101'].description == (
        'ResNeSt-101: radix 2, 1 group of 64, stem 128 '
        '(ImageNet top-1 82.83 at 256)')


@pytest.mark.parametrize('name', RELEASES)
def test_short_name_offline_names_url_and_path(offline_hub, name):
    """Every record's name is a short name of ``resolve_checkpoint``."""
    file = os.path.basename(AUTHORS_URLS[name])
    url = ('https://github.com/zhanghang1989/ResNeSt/releases/download/'
           f'weights_step1/{file}')
    with pytest.raises(FileNotFoundError) as info:
        resnest_mm.resolve_checkpoint(name)
    assert f'could not download {url}' in str(info.value)
    assert (f'put it at {offline_hub / file} (the torch hub cache'
            in str(info.value))


def test_pretrained_offline_without_the_file_says_where_to_put_it(offline_hub):
    with pytest.raises(FileNotFoundError) as info:
        resnest_mm.resnest50_fast_1s1x64d(pretrained=True)
    file = 'resnest50_fast_1s1x64d-d8fbf808.pth'
    assert f'weights_step1/{file}' in str(info.value)
    assert f'put it at {offline_hub / file}' in str(info.value)


def test_pretrained_loads_the_release_file_from_the_hub_cache(
        offline_hub, monkeypatch):
    """The authors' file, as they save it, in the cache: no download."""
    name = 'resnest50_fast_4s2x40d'
    theirs = randomize_(ablation.resnest50_fast_4s2x40d()).eval()
    offline_hub.mkdir(parents=True)
    saved = offline_hub / 'saved.pth'
    torch.save(theirs.state_dict(), saved)
    sha256 = hashlib.sha256(saved.read_bytes()).hexdigest()[:8]
    saved.rename(offline_hub / f'{name}-{sha256}.pth')
    # A file with the published hash cannot be made: publish ours instead.
    monkeypatch.setitem(RELEASES, name,
                        dataclasses.replace(RELEASES[name], sha256=sha256))

    ours = resnest_mm.resnest50_fast_4s2x40d(
        pretrained=True, out_indices=(1, 3), frozen_stages=1).eval()
    assert ours.init_cfg == dict(type='Pretrained', checkpoint=name)
    x = images((2, 3, 64, 64))
    with torch.no_grad():
        expected = authors_layer4(theirs, x)
        actual = ours(x)
    assert [tuple(o.shape) for o in actual] == [(2, 512, 8, 8),
                                                (2, 2048, 2, 2)]
    assert rel_err(actual[-1], expected) <= 1e-5
    assert not any(p.requires_grad for p in ours.layer1.parameters())


def test_overrides_apply_and_the_network_is_initialised():
    model = resnest_mm.resnest50(
        out_indices=(3, ), frozen_stages=1, norm_eval=True)
    assert (model.depth, model.stem_channels) == (50, 64)
    assert model.out_indices == (3, ) and model.norm_eval
    assert model.out_channels == (2048, ) and model.out_strides == (32, )
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    dilated = resnest_mm.resnest101(
        strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
    assert dilated.out_strides == (4, 8, 8, 8)  # as the README says
    blocks = [b for i in range(1, 5) for b in getattr(model, f'layer{i}')]
    # init_weights has run: zero_init_residual zeroed each last norm
    assert all(torch.all(b.norm3.weight == 0) for b in blocks)
    model = resnest_mm.resnest50_fast_1s4x24d(zero_init_residual=False)
    assert all(torch.all(b.norm3.weight == 1) for b in model.layer1)
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 256, 16, 16), (1, 512, 8, 8),
                                             (1, 1024, 4, 4), (1, 2048, 2, 2)]


def test_unknown_argument_names_the_close_one():
    with pytest.raises(TypeError) as info:
        resnest_mm.resnest101(out_indice=(3, ))
    message = str(info.value)
    assert message.startswith(
        'resnest101() got unknown arguments out_indice (out_indice: did you '
        'mean out_indices?); it takes pretrained and these ResNeSt '
        'arguments: ')
    assert 'frozen_stages' in message and 'depth' not in message


def test_release_settings_cannot_be_overridden():
    with pytest.raises(TypeError) as info:
        resnest_mm.resnest50(depth=101, radix=1)
    assert str(info.value) == (
        "resnest50() is the release with depth=50, stem_channels=64, "
        "radix=2, groups=1, base_width=64, avd_first=False; it cannot take "
        "depth=101, radix=1. Build ResNeSt(depth=101, radix=1, ...) for "
        "another network")


def test_pretrained_takes_a_bool_and_no_init_cfg():
    with pytest.raises(
            TypeError,
            match=r'takes True or False, got '
            r"'w\.pth'; for other weights pass init_cfg="):
        resnest_mm.resnest50(pretrained='w.pth')
    init_cfg = dict(type='Pretrained', checkpoint='w.pth')
    with pytest.raises(ValueError, match='cannot also take init_cfg='):
        resnest_mm.resnest50(pretrained=True, init_cfg=init_cfg)


def test_bad_values_and_names_are_refused():
    with pytest.raises(
            ValueError,
            match=r'out_indices \(4,\) must be a '
            r'non-empty subset of \(0, 1, 2, 3\)'):
        resnest_mm.resnest50(out_indices=(4, ))
    with pytest.raises(
            ValueError,
            match="unknown release 'resnest152'; "
            'releases: resnest50, resnest101, '):
        build_release('resnest152')
