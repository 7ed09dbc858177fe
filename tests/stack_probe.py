"""Run by test_stacks.py inside a stack's environment, not by pytest.

    python stack_probe.py evil CHECKPOINT MARKER
    python stack_probe.py zoo CHECKPOINT_DIR SCOPE NAME OUR_CONFIG

``evil`` writes, with this environment's torch, a ResNeSt-14 checkpoint whose
unpickling would create MARKER. ``zoo`` loads the upstream checkpoint NAME
(written by zoo_upstream.py) strictly into the model of OUR_CONFIG through
mmengine's loader, with the config loaded and the loading routed as our
tools do, and compares the outputs. Both
print one JSON line; a failed check raises. ``resnest_mm`` is the installed
one: the caller runs this file from a copy of tests/, without PYTHONPATH.
"""
import json
import sys
from pathlib import Path

import torch

# the tools' support package, from the checkout copy this file runs in
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))


class WritesMarker:
    """Unpickling this runs ``exec``, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()', )


def evil(checkpoint, marker):
    from resnest_mm import ResNeSt
    state_dict = ResNeSt(depth=14).state_dict()
    state_dict['payload'] = WritesMarker(marker)
    torch.save(dict(state_dict=state_dict), checkpoint)
    return dict(written=checkpoint)


def zoo(checkpoint_dir, scope, name, our_config):
    from mmengine.runner import load_checkpoint
    from zoo_upstream import build_model, zoo_outputs

    from resnest_mm import MMDetResNeSt, MMSegResNeSt
    from resnest_mm.safe_load import route_mmengine_loading
    from resnest_tools.runner_setup import load_config
    from helpers import rel_err
    route_mmengine_loading()
    reference = torch.load(f'{checkpoint_dir}/{name}.outputs.pth')
    # as our tools load it (OneDL's mmseg:: bases need that)
    model = build_model(scope, load_config(our_config))
    ours = {'mmdet': MMDetResNeSt, 'mmseg': MMSegResNeSt}[scope]
    assert type(model.backbone) is ours, type(model.backbone)
    load_checkpoint(
        model, f'{checkpoint_dir}/{name}.pth', map_location='cpu', strict=True)
    actual = zoo_outputs(model, reference['input'])
    assert len(actual) == len(reference['outputs'])
    errors = [rel_err(a, e) for a, e in zip(actual, reference['outputs'])]
    assert max(errors) <= 1e-4, errors
    return dict(outputs=len(errors), max_rel_err=max(errors))


if __name__ == '__main__':
    command = {'evil': evil, 'zoo': zoo}[sys.argv[1]]
    print(json.dumps(command(*sys.argv[2:])))
