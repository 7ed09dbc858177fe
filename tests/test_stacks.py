"""The package on the stacks users run, each built from the package index as
its users build it (tests/stacks.py): the frozen official stack (torch 2.1,
numpy 1.x, mmcv 2.1.0, mmdet 3.3.0, mmseg 1.2.2) and OneDL's forks.

In each, ``pip install`` of a copy of the checkout (not editable) must change
nothing installed; then, with that installed copy and the copy's tools, run
outside the checkout: a detection and a segmentation config train, are killed
after a checkpoint, resume and test (AP, mIoU); a checkpoint that would run
code is refused by tools/test.py; upstream zoo checkpoints load strictly; a
2-process torchrun run trains; and the unit tests of the backbone, its
memory-saving path, the safe loader and the benchmark pass on that torch.

Marked ``stacks``: ``make test-stacks`` runs them (``.ci/run`` after ``make
test``, which leaves them out). A stack's first build on a machine compiles
its mmcv (about 13 minutes on 2 cores; cached afterwards); each later build
takes minutes. A stack whose Python is not installed is skipped, saying so.
"""
import json
import re
import shutil
import subprocess
import zipfile

import pytest
from stacks import (STACKS, build, clean_env, copy_checkout, find_python,
                    install_checkout)
from zoo_upstream import our_configs

from resnest_tools.demo_data import make_ade20k_scenes, make_coco_shapes
from helpers import (ROOT, TINY_SEGMENTATION, free_port, kill_when,
                     tiny_detection_config)

pytestmark = pytest.mark.stacks

#: each family's extras: installing them into its own stack changes nothing
EXTRAS = {'frozen': 'det,seg', 'onedl': 'onedl-det,onedl-seg'}
#: one upstream zoo model per task (tests/zoo_upstream.py builds them)
ZOO = {
    'mmdet': 'faster-rcnn_s50_fpn_syncbn-backbone+head_ms-range-1x_coco',
    'mmseg': 'resnest_s101-d8_fcn_4xb2-80k_cityscapes-512x1024',
}
#: our tests run on each stack's torch (its fallbacks for newer APIs): the
#: memory-saving path (alone, with SyncBN, and against upstream in training;
#: eval mode runs upstream's path), the safe loader, compile and export, the
#: benchmark (less its CPU autocast run, which takes as long as the rest)
UNIT_TESTS = ('test_memory_saving.py', 'test_sync_batchnorm.py',
              'test_upstream_equivalence.py', 'test_backbone_behaviour.py',
              'test_safe_load.py', 'test_export.py', 'test_benchmark.py')
UNIT_TESTS_LEFT_OUT = '(equivalence and eval) or cpu_autocast'


class StackRun:
    """A built stack with a copy of the checkout installed into it."""

    def __init__(self, name, venv, source, tmp):
        self.name, self.venv, self.source, self.tmp = name, venv, source, tmp

    def tool(self, name):
        return [str(self.venv.python), str(self.source / 'tools' / name)]

    def run(self, args, timeout=900, **kwargs):
        """Run ``args`` outside the checkout; its process, finished."""
        return subprocess.run(
            args,
            cwd=self.tmp,
            env=clean_env(**kwargs),
            capture_output=True,
            text=True,
            timeout=timeout)

    def check(self, args, **kwargs):
        proc = self.run(args, **kwargs)
        assert proc.returncode == 0, (
            proc.stdout[-3000:] + proc.stderr[-5000:])
        return proc.stdout + proc.stderr

    def train_kill_resume_test(self, cfg, work, first, last):
        """Train ``cfg`` into ``work``, SIGKILL it once checkpoint ``first``
        is complete, resume with ``--resume`` up to ``last``, and test
        ``last``; the resumed run's and the test's output."""
        train = self.tool('train.py') + [str(cfg), '--work-dir', str(work)]
        kill_when(
            train,
            lambda: zipfile.is_zipfile(work / first),
            f'{work}-killed.log',
            cwd=self.tmp,
            env=clean_env())
        assert not (work / last).exists(), 'it finished before it was killed'
        resumed = self.check(train + ['--resume'])
        tested = self.check(
            self.tool('test.py') +
            [str(cfg),
             str(work / last), '--work-dir', f'{work}-test'])
        return resumed, tested


@pytest.fixture(scope='module', params=sorted(STACKS))
def stack(request, tmp_path_factory):
    """A fresh venv of one stack, with a copy of the checkout installed
    (``pip install``, which must change nothing already there); removed
    afterwards (about 5 GB)."""
    spec = STACKS[request.param]
    if find_python(spec.python) is None:
        pytest.skip(f'the {spec.name} stack needs Python {spec.python}, '
                    f'which is not installed (pyenv install {spec.python})')
    tmp = tmp_path_factory.mktemp(spec.name)
    source = copy_checkout(tmp / 'resnest-mm')
    venv = build(spec, tmp / 'venv')
    install_checkout(venv, source)  # asserts that it changed nothing else
    yield StackRun(spec.name, venv, source, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def test_extras_of_the_stacks_family_would_install_nothing_more(stack):
    report = stack.venv.pip('install', '--dry-run', '--quiet', '--report', '-',
                            f'{stack.source}[{EXTRAS[stack.name]}]')
    would = [
        re.sub(r'[-_.]+', '-', i['metadata']['name']).lower()
        for i in json.loads(report)['install']
    ]
    assert would == ['resnest-mm'], would


def test_stack_has_the_stated_versions(stack):
    spec = STACKS[stack.name]
    pins = [
        p for p in (spec.torch, spec.mmengine, *spec.packages) if '==' in p
    ]
    wanted = dict(p.split('==') for p in pins)
    wanted[spec.mmcv[0]] = spec.mmcv[1]
    found = stack.venv.run(
        '-c', 'import importlib.metadata as m, json, sys; '
        'print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))', *wanted)
    assert json.loads(found) == wanted


def test_installed_copy_is_the_one_imported(stack):
    found = stack.check([
        str(stack.venv.python), '-c',
        'import resnest_mm; print(resnest_mm.__file__)'
    ])
    assert str(stack.venv.path) in found


@pytest.fixture(scope='module')
def coco(stack):
    root = stack.tmp / 'coco'
    make_coco_shapes(root, num_train=8, num_val=4, image_size=(64, 64))
    base = stack.source / 'configs/detection/demo/' \
        'faster-rcnn_s14_fpn_1x_demo-shapes.py'
    return root, base


def test_detection_trains_is_killed_resumes_and_tests(stack, coco):
    root, base = coco
    cfg = tiny_detection_config(stack.tmp, root, base=base, epochs=2)
    resumed, tested = stack.train_kill_resume_test(cfg, stack.tmp / 'det',
                                                   'epoch_1.pth',
                                                   'epoch_2.pth')
    assert 'resumed epoch: 1' in resumed
    assert re.search(r'coco/bbox_mAP: \d', tested), tested[-2000:]


def test_segmentation_trains_is_killed_resumes_and_tests(stack):
    make_ade20k_scenes(
        stack.tmp / 'ade', num_train=4, num_val=2, image_size=(64, 64))
    base = next(
        stack.source.glob('configs/segmentation/demo/*_ade20k-demo-*.py'))
    cfg = stack.tmp / 'tiny_ade20k.py'
    cfg.write_text(
        TINY_SEGMENTATION.format(
            base=base, data_root=stack.tmp / 'ade' / 'ADEChallengeData2016'))
    resumed, tested = stack.train_kill_resume_test(cfg, stack.tmp / 'seg',
                                                   'iter_2.pth', 'iter_4.pth')
    assert 'resumed epoch: 0, iter: 2' in resumed
    assert re.search(r'mIoU: \d', tested), tested[-2000:]


def test_checkpoint_that_runs_code_is_refused_by_the_test_tool(stack, coco):
    root, base = coco
    cfg = tiny_detection_config(stack.tmp, root, base=base)
    evil, marker = stack.tmp / 'evil.pth', stack.tmp / 'code-ran'
    probe = [
        str(stack.venv.python),
        str(stack.source / 'tests/stack_probe.py')
    ]
    stack.check(probe + ['evil', str(evil), str(marker)])
    proc = stack.run(stack.tool('test.py') + [cfg, str(evil)])
    assert proc.returncode != 0
    assert 'UnsafeCheckpointError' in proc.stderr, proc.stderr[-3000:]
    assert 'pickled global exec' in proc.stderr
    assert not marker.exists()


def test_upstream_zoo_checkpoints_load_strictly(stack):
    out = stack.tmp / 'zoo'
    out.mkdir()
    tests = stack.source / 'tests'
    stack.check([
        str(stack.venv.python),
        str(tests / 'zoo_upstream.py'),
        str(out), *ZOO.values()
    ])
    for scope, name in ZOO.items():
        ours = stack.source / our_configs(scope)[name].relative_to(ROOT)
        log = stack.check([
            str(stack.venv.python),
            str(tests / 'stack_probe.py'), 'zoo',
            str(out), scope, name,
            str(ours)
        ])
        found = json.loads(re.findall(r'^\{.*\}$', log, re.M)[-1])
        assert found['outputs'] > 4 and found['max_rel_err'] <= 1e-4


def test_two_process_torchrun_trains(stack, coco):
    root, base = coco
    cfg = tiny_detection_config(stack.tmp, root, base=base, batch=1, epochs=1)
    work = stack.tmp / 'dist'
    out = stack.check([
        str(stack.venv.python), '-m', 'torch.distributed.run',
        '--nproc_per_node=2', f'--master_port={free_port()}',
        str(stack.source / 'tools/train.py'), cfg, '--work-dir',
        str(work), '--launcher', 'pytorch'
    ])
    assert 'distributed on gloo over 2 processes' in out
    assert [p.name for p in work.glob('*.pth')] == ['epoch_1.pth']


def test_unit_tests_pass_on_this_torch(stack):
    """The backbone against upstream, the memory-saving path, the safe
    loader and the benchmark, on the stack's torch (run from outside the
    checkout: the installed copy is tested)."""
    stack.venv.install('--no-deps', '-r',
                       stack.source / 'requirements/references.txt')
    stack.venv.install('pytest', 'onnx', 'onnxruntime', 'onnxscript')
    out = stack.check(
        [
            str(stack.venv.python), '-m', 'pytest', '-q', '-p',
            'no:cacheprovider', '-k', f'not ({UNIT_TESTS_LEFT_OUT})'
        ] + [str(stack.source / 'tests' / name) for name in UNIT_TESTS],
        timeout=1800)
    assert re.search(r'\d+ passed', out), out[-3000:]
    assert ' failed' not in out
