"""``type='ResNeSt'`` builds ours in mmdet and mmseg, whatever was imported
first.

Each case runs in a fresh interpreter: import order only matters there.
"""
import subprocess
import sys
import textwrap

import pytest


def run_python(code, tmp_path=None):
    proc = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


BUILD_BOTH = '''
from mmdet.registry import MODELS as DET
from mmseg.registry import MODELS as SEG
import resnest_mm
det = DET.build(dict(type='ResNeSt', depth=50))
seg = SEG.build(dict(type='ResNeSt', depth=50))
assert type(det) is resnest_mm.MMDetResNeSt, type(det)
assert type(seg) is resnest_mm.MMSegResNeSt, type(seg)
# each package's own default
assert det.norm_eval is True and seg.norm_eval is False
# Their own models still build next to ours.
DET.build(dict(type='ResNet', depth=18))
SEG.build(dict(type='ResNetV1c', depth=18))
print('ok')
'''


@pytest.mark.parametrize('first', [
    'import resnest_mm',
    'import mmdet.models, mmseg.models',
    'import mmseg.models; import resnest_mm; import mmdet.models',
    'from mmdet.utils import register_all_modules; '
    'register_all_modules(init_default_scope=False)',
])
def test_registries_build_ours_in_any_import_order(first):
    assert run_python(first + '\n' + BUILD_BOTH).strip().endswith('ok')


HIDE = '''
import sys


class Hide:
    """Fail imports of one package as Python does when it is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {package!r}:
            raise ModuleNotFoundError(
                f"No module named {{name!r}}", name={package!r})


sys.meta_path.insert(0, Hide())
'''


def test_only_mmdet_installed():
    out = run_python(
        HIDE.format(package='mmseg') + textwrap.dedent('''
        import resnest_mm
        from mmdet.registry import MODELS
        assert resnest_mm.REGISTERED_SCOPES == ['mmdet'], (
            resnest_mm.REGISTERED_SCOPES)
        assert type(MODELS.build(dict(type='ResNeSt', depth=50))) is (
            resnest_mm.MMDetResNeSt)
        print('ok')
    '''))
    assert out.strip() == 'ok'


def test_only_mmseg_installed():
    out = run_python(
        HIDE.format(package='mmdet') + textwrap.dedent('''
        import resnest_mm
        from mmseg.registry import MODELS
        assert resnest_mm.REGISTERED_SCOPES == ['mmseg'], (
            resnest_mm.REGISTERED_SCOPES)
        assert type(MODELS.build(dict(type='ResNeSt', depth=50))) is (
            resnest_mm.MMSegResNeSt)
        print('ok')
    '''))
    assert out.strip() == 'ok'


@pytest.mark.parametrize('scope,registry,model', [
    ('mmdet', 'mmdet.registry',
     "dict(type='RetinaNet', backbone=dict(type='ResNeSt', depth=50,"
     " out_indices=(1, 2, 3)),"
     " neck=dict(type='FPN', in_channels=[512, 1024, 2048], out_channels=64,"
     " num_outs=5),"
     " bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=64,"
     " feat_channels=64,"
     " anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,"
     " scales_per_octave=3,"
     " ratios=[1.0], strides=[8, 16, 32, 64, 128]),"
     " bbox_coder=dict(type='DeltaXYWHBBoxCoder'),"
     " loss_cls=dict(type='FocalLoss', use_sigmoid=True),"
     " loss_bbox=dict(type='L1Loss')))"),
    ('mmseg', 'mmseg.registry',
     "dict(type='EncoderDecoder', backbone=dict(type='ResNeSt', depth=50),"
     " decode_head=dict(type='FCNHead', in_channels=2048, channels=64,"
     " num_classes=4,"
     " in_index=3))"),
])
def test_config_with_custom_imports_builds_ours(tmp_path, scope, registry,
                                                model):
    (tmp_path / 'cfg.py').write_text(
        "custom_imports = dict(imports=['resnest_mm'], "
        'allow_failed_imports=False)\n'
        f"default_scope = '{scope}'\nmodel = {model}\n")
    out = run_python(
        f'''
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile('cfg.py')
        init_default_scope(cfg.default_scope)
        from {registry} import MODELS
        model = MODELS.build(cfg.model)
        import resnest_mm
        assert isinstance(model.backbone, resnest_mm.ResNeSt), (
            type(model.backbone))
        print('ok')
    ''', tmp_path)
    assert out.strip() == 'ok'
