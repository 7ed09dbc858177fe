"""tools/train.py and tools/test.py end to end on tiny generated ADE20K,
Cityscapes and Pascal Context.

Each tool runs as a user runs it, in its own process, on the demo configs
(depth 14): two iterations with a checkpoint, resumed for two more, then
evaluated in whole-image and sliding-window inference; Pascal Context (the
same tools) trains two iterations and is evaluated.
"""

import numpy as np
import pytest
from PIL import Image

from resnest_tools.demo_data import (make_ade20k_scenes,
                                     make_cityscapes_scenes,
                                     make_pascal_context_scenes)
from resnest_tools.run_logs import read_scalars
from helpers import (ROOT, TINY_SEGMENTATION, flip_tta_of_mirror_image, run,
                     run_unchecked, tool)

#: dataset -> its generator, the data root under the generated folder, the
#: image size (width, height), the test image size after the demo's Resize,
#: and a sliding window
DATASETS = {
    'ade20k': (make_ade20k_scenes, 'ADEChallengeData2016', (64, 64),
               (128, 128), (96, 96)),
    'cityscapes':
    (make_cityscapes_scenes, '', (128, 64), (256, 128), (96, 160)),
}


@pytest.fixture(scope='module', params=sorted(DATASETS))
def trained(request, tmp_path_factory):
    """Data made as a user makes it; 2 iterations, then resumed to 4.

    Returns (dataset, config, work dir, log of the resumed run).
    """
    dataset = request.param
    generate, subfolder, image_size, _, _ = DATASETS[dataset]
    tmp = tmp_path_factory.mktemp(dataset)
    generate(tmp / 'data', num_train=4, num_val=2, image_size=image_size)
    if dataset == 'cityscapes':
        run(tool('convert_cityscapes.py') + [str(tmp / 'data')])
    base = next(ROOT.glob(f'configs/segmentation/demo/*_{dataset}-demo-*.py'))
    cfg = tmp / f'tiny_{dataset}.py'
    cfg.write_text(
        TINY_SEGMENTATION.format(
            base=base, data_root=tmp / 'data' / subfolder))
    work = tmp / 'work'
    run(
        tool('train.py') + [
            str(cfg), '--work-dir',
            str(work), '--cfg-options', 'train_cfg.max_iters=2'
        ])
    assert (work /
            'iter_2.pth').exists() and not (work / 'iter_4.pth').exists()
    log = run(
        tool('train.py') +
        [str(cfg), '--work-dir', str(work), '--resume'])
    return dataset, str(cfg), work, log


def test_resumed_run_continues_counting_and_reports_miou(trained):
    _, _, work, log = trained
    assert 'resumed epoch: 0, iter: 2' in log
    train, val = read_scalars(work)
    assert [r['step'] for r in train] == [1, 2, 3, 4]  # no gap, no restart
    assert [r['step'] for r in val] == [2, 4] and all(0 <= r['mIoU'] <= 100
                                                      for r in val)
    assert 'mIoU:' in log


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_test_tool_gives_miou_and_label_maps(trained, mode, tmp_path):
    dataset, cfg, work, _ = trained
    _, _, image_size, test_size, window = DATASETS[dataset]
    options = [f'model.test_cfg.mode={mode}']
    if mode == 'slide':  # 2x2 overlapping windows smaller than the image
        assert window[0] < test_size[1] and window[1] < test_size[0]
        stride = tuple(w * 2 // 3 for w in window)
        options += [
            f'model.test_cfg.crop_size={window}'.replace(' ', ''),
            f'model.test_cfg.stride={stride}'.replace(' ', '')
        ]
    out = run(
        tool('test.py') + [
            cfg,
            str(work / 'iter_4.pth'), '--work-dir',
            str(tmp_path), '--out',
            str(tmp_path / 'preds'), '--cfg-options', *options
        ])
    assert 'mIoU:' in out and 'aAcc:' in out
    preds = sorted((tmp_path / 'preds').rglob('*.png'))
    assert len(
        preds) == 2  # one label map per val image, at the image's own size
    assert all(
        np.asarray(Image.open(p)).shape == image_size[::-1] for p in preds)


def test_unconverted_cityscapes_fails_before_any_model_is_built(tmp_path):
    make_cityscapes_scenes(
        tmp_path / 'data', num_train=2, num_val=1, image_size=(64, 32))
    base = next(ROOT.glob('configs/segmentation/demo/*_cityscapes-demo-*.py'))
    cfg = tmp_path / 'tiny.py'
    cfg.write_text(
        TINY_SEGMENTATION.format(base=base, data_root=tmp_path / 'data'))
    proc = run_unchecked(tool('train.py') + [str(cfg)], timeout=300)
    assert proc.returncode != 0
    assert 'DatasetError: 2 of 2 images' in proc.stderr
    assert 'python tools/convert_cityscapes.py' in proc.stderr
    assert 'Iter(train)' not in proc.stdout + proc.stderr


def test_pascal_context_trains_and_reports_miou(tmp_path):
    """The authors' Pascal Context recipe (demo size): its split lists, 59
    classes with background ignored; validated in training (whole images,
    for speed) and by tools/test.py with the recipe's sliding window."""
    make_pascal_context_scenes(
        tmp_path / 'data', num_train=4, num_val=2, image_size=(64, 64))
    base = next(
        ROOT.glob('configs/segmentation/demo/*_pascal-context-59-demo-*.py'))
    cfg = tmp_path / 'tiny_pascal_context.py'
    cfg.write_text(
        TINY_SEGMENTATION.format(
            base=base, data_root=tmp_path / 'data' / 'VOCdevkit' / 'VOC2010'))
    work = tmp_path / 'work'
    run(
        tool('train.py') + [
            str(cfg), '--work-dir',
            str(work), '--cfg-options', 'train_cfg.max_iters=2',
            'train_cfg.val_interval=2', 'model.test_cfg.mode=whole'
        ])
    [val] = read_scalars(work)[1]
    assert val['step'] == 2 and 0 <= val['mIoU'] <= 100
    out = run(
        tool('test.py') +
        [str(cfg),
         str(work / 'iter_2.pth'), '--work-dir',
         str(tmp_path)])
    assert 'mIoU:' in out and 'aAcc:' in out


#: mmseg's TTA: the ratios 0.5-1.75 of the image, with flip
MMSEG_TTA = ('SegTTAModel merges 12 views per image: scales (factor 0.5, '
             'factor 0.75, factor 1.0, factor 1.25, factor 1.5, factor 1.75) '
             'x flips (none, horizontal)')


def test_tta_names_its_views_and_reports_the_augmented_miou(trained, tmp_path):
    dataset, cfg, work, _ = trained
    if dataset != 'ade20k':
        pytest.skip('one dataset shows it: both inherit mmseg\'s TTA, checked '
                    'for every config in test_segmentation_configs.py')
    out = run(
        tool('test.py') + [
            cfg,
            str(work / 'iter_4.pth'),
            '--work-dir',
            str(tmp_path),
            '--tta',
            '--cfg-options',
            'test_dataloader.dataset.indices=1'  # 1 image x 12 views
        ])
    assert f'--tta: {MMSEG_TTA}' in out
    assert 'mIoU:' in out and 'aAcc:' in out


def test_flip_tta_of_a_mirror_image_is_plain_testing_and_its_mirror(
        trained, tmp_path):
    """Flipped, a left-right symmetric image is the same image: flip-only TTA
    must average the class probabilities of plain testing with their mirror
    image, and so predict a symmetric label map.

    Not the plain prediction alone: the network is not exactly
    flip-equivariant (its stride-2 sampling grids start at the left edge).
    """
    import torch
    dataset, cfg, work, _ = trained
    if dataset != 'ade20k':
        pytest.skip('one dataset shows it: both use mmseg\'s SegTTAModel')
    image = np.asarray(
        Image.open(next((work.parent / 'data').rglob('ADE_val_*.jpg'))))
    _, plain, merged, flipped = flip_tta_of_mirror_image(
        cfg,
        work / 'iter_4.pth',
        image.repeat(2, 0).repeat(2, 1),  # the demo's test scale
        tmp_path)
    probs = plain.seg_logits.data.softmax(0)
    expected = (sum(probs.flip(-1) if f else probs
                    for f in flipped) / len(flipped)).argmax(0)
    predicted = merged.pred_sem_seg.data[0]
    assert torch.equal(predicted, expected)
    assert torch.equal(predicted, predicted.flip(-1))


def test_fine_tuning_reinitialises_both_classifiers_whole(trained):
    """The ADE20K demo segmentor into the 3-class fine-tuning config: the two
    heads' classifiers keep their fresh initialisation (no part of the
    checkpoint's 150-class tensors is copied) and are the ones listed; every
    other tensor comes from the checkpoint."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from resnest_tools.fine_tuning import (checkpoint_state_dict,
                                           compare_state_dicts)
    from resnest_tools.runner_setup import build_model
    dataset, _, work, _ = trained
    if dataset != 'ade20k':
        pytest.skip('the fine-tuning demo config starts from ADE20K')
    model = build_model(
        Config.fromfile(ROOT / 'configs/segmentation/demo/'
                        'resnest_s14-d8_deeplabv3_ft-100_ade20k-demo-3cls-'
                        '64x64.py'))
    model.init_weights()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = checkpoint_state_dict(str(work / 'iter_4.pth'))
    loaded, report = compare_state_dicts(checkpoint, initial)
    assert ('re-initialised, shape differs from the checkpoint: 4 ('
            'decode_head.conv_seg.weight (150, 512, 1, 1) -> (3, 512, 1, 1), '
            'decode_head.conv_seg.bias (150,) -> (3,), '
            'auxiliary_head.conv_seg.weight (150, 256, 1, 1) -> '
            '(3, 256, 1, 1), auxiliary_head.conv_seg.bias (150,) -> (3,)); '
            'initialised, not in the checkpoint: none; '
            'unused from the checkpoint: none') in report
    load_checkpoint(model, str(work / 'iter_4.pth'), map_location='cpu')
    for name, tensor in model.state_dict().items():
        source = checkpoint if name in loaded else initial
        assert torch.equal(tensor, source[name]), name
    assert len(loaded) == len(initial) - 4
