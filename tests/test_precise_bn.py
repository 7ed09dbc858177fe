"""PreciseBN recomputes exactly the statistics training would average, and
nothing else."""
import copy
from collections import defaultdict

import pytest
import torch
from mmengine.model import BaseModel
from torch.nn.modules.batchnorm import _BatchNorm

from resnest_mm import PreciseBNHook, ResNeSt, recompute_bn_stats
from helpers import images, rel_err


class Backbone(BaseModel):
    """Our backbone as the smallest mmengine model: a loss on its
    outputs."""

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = ResNeSt(depth=14, stem_channels=32, **kwargs)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=sum(f.mean() for f in self.backbone(inputs)))


def batches(num=3):
    gen = torch.Generator().manual_seed(1)
    return [dict(inputs=images((4, 3, 32, 32), gen)) for _ in range(num)]


def reference_stats(model, data):
    """Per-norm mean over the batches of each batch's channel mean and
    unbiased variance of that norm's input, read by forward hooks on a copy
    in training mode."""
    ref = copy.deepcopy(model).train()
    seen = defaultdict(list)
    for name, m in ref.named_modules():
        if isinstance(m, _BatchNorm) and m.training:
            m.register_forward_pre_hook(
                lambda m, args, name=name: seen[name].append(args[0]))
    with torch.no_grad():
        for batch in data:
            ref(**batch)
    return {
        name:
        (torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0),
         torch.stack([x.var((0, 2, 3), unbiased=True) for x in xs]).mean(0))
        for name, xs in seen.items()
    }


@pytest.mark.parametrize('norm_eval', [False, True])
def test_statistics_are_the_average_over_the_batches_seen(norm_eval):
    model = Backbone(frozen_stages=1, norm_eval=norm_eval).eval()
    before = copy.deepcopy(model.state_dict())
    data = batches()
    expected = reference_stats(model, data)
    # norm_eval: every norm stays in eval mode, so none is recomputed
    assert bool(expected) != norm_eval

    updated = recompute_bn_stats(model, iter(data), num_iters=len(data))

    assert updated == len(expected)
    assert not model.training  # its mode is given back
    for name, m in model.named_modules():
        if not isinstance(m, _BatchNorm):
            continue
        if name in expected:
            mean, var = expected[name]
            assert rel_err(m.running_mean, mean) < 1e-5, name
            assert rel_err(m.running_var, var) < 1e-5, name
            assert m.momentum == 0.1  # restored
        else:  # frozen stem/stage 1, or norm_eval: untouched
            assert torch.equal(m.running_mean,
                               before[f'{name}.running_mean']), name
            assert torch.equal(m.running_var,
                               before[f'{name}.running_var']), name
    stem = [
        n for n, m in model.named_modules()
        if n.startswith('backbone.stem') and isinstance(m, _BatchNorm)
    ]
    assert stem and not set(stem) & set(expected)  # frozen_stages=1
    statistics = ('running_mean', 'running_var', 'num_batches_tracked')
    for key, value in model.state_dict().items():
        if not key.endswith(statistics):
            assert torch.equal(value, before[key]), key  # weights untouched


def test_too_few_batches_is_an_error_that_names_the_fix():
    model = Backbone()
    with pytest.raises(ValueError, match='gave 2; lower num_iters'):
        recompute_bn_stats(model, iter(batches(2)), num_iters=3)
    assert all(m.momentum == 0.1 for m in model.modules()
               if isinstance(m, _BatchNorm))


def test_hook_is_in_mmdets_and_mmsegs_registries():
    from mmdet.registry import HOOKS as DET_HOOKS
    from mmseg.registry import HOOKS as SEG_HOOKS
    for registry in (DET_HOOKS, SEG_HOOKS):
        hook = registry.build(dict(type='PreciseBNHook', num_iters=5))
        assert isinstance(hook, PreciseBNHook) and hook.num_iters == 5
    with pytest.raises(ValueError, match='num_iters >= 1'):
        PreciseBNHook(num_iters=0)
