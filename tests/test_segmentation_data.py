"""Segmentation data: the demo generators, the Cityscapes conversion and the
dataset checks."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from resnest_tools.dataset_checks import DatasetError, check_datasets
from resnest_tools.demo_data import (make_ade20k_scenes,
                                     make_cityscapes_scenes,
                                     make_pascal_context_scenes)
from resnest_tools.demo_data.ade20k_scenes import CLASSES as ADE_DRAWN
from resnest_tools.demo_data.pascal_context_scenes import \
    CLASSES as CONTEXT_DRAWN
from helpers import ROOT, run_unchecked, tool

DEMOS = {
    name: next(ROOT.glob(f'configs/segmentation/demo/*_{name}-demo-*.py'))
    for name in ('ade20k', 'cityscapes', 'pascal-context-59')
}
# The official Cityscapes table (Cordts et al. 2016;
# cityscapesscripts/helpers/labels.py): label id -> train id of the 19
# evaluated classes. Every other id is ignored (255).
PUBLISHED_TRAIN_IDS = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18
}
CITYSCAPES_NAME = re.compile(r'(aachen|bremen|frankfurt)_\d{6}_\d{6}')


def png(path):
    return np.asarray(Image.open(path))


def files(root, pattern):
    return sorted(p.relative_to(root) for p in Path(root).glob(pattern))


def test_ade20k_generator_writes_the_published_layout_deterministically(
        tmp_path):
    for run in ('a', 'b'):
        make_ade20k_scenes(
            tmp_path / run, num_train=3, num_val=2, image_size=(64, 48))
    base = tmp_path / 'a' / 'ADEChallengeData2016'
    assert files(base, 'images/*/*') == [
        Path(f'images/{split}/ADE_{short}_{i:08d}.jpg')
        for split, short, n in (('training', 'train', 3), ('validation', 'val',
                                                           2))
        for i in range(1, n + 1)
    ]
    assert [p.with_suffix('') for p in files(base, 'annotations/*/*.png')] == [
        Path('annotations', *p.parts[1:]).with_suffix('')
        for p in files(base, 'images/*/*')
    ]
    for path in base.glob('annotations/*/*.png'):
        labels = png(path)
        assert labels.shape == (48, 64) and labels.max() <= 150
        assert Image.open(base / 'images' / path.parent.name /
                          f'{path.stem}.jpg').size == (64, 48)
    b = tmp_path / 'b' / 'ADEChallengeData2016'
    assert all(p.read_bytes() == (b / p.relative_to(base)).read_bytes()
               for p in base.rglob('*.*'))
    from mmseg.datasets import \
        ADE20KDataset  # the values are ADE20K's class numbers
    assert all(ADE20KDataset.METAINFO['classes'][v - 1].strip() == name
               for name, v in ADE_DRAWN.items())


def test_cityscapes_generator_writes_the_published_layout_and_format(tmp_path):
    from cityscapesscripts.helpers.labels import name2label
    make_cityscapes_scenes(
        tmp_path, num_train=3, num_val=1, image_size=(96, 48))
    images = files(tmp_path, 'leftImg8bit/*/*/*')
    assert [str(p) for p in images] == [
        'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png',
        'leftImg8bit/train/aachen/aachen_000002_000019_leftImg8bit.png',
        'leftImg8bit/train/bremen/bremen_000001_000019_leftImg8bit.png',
        'leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png'
    ]
    gt = files(tmp_path, 'gtFine/*/*/*')
    assert [str(p) for p in gt] == [
        str(p.parent).replace('leftImg8bit', 'gtFine', 1) + '/' +
        p.name.replace('leftImg8bit.png', suffix) for p in images
        for suffix in ('gtFine_labelIds.png', 'gtFine_polygons.json')
    ]
    for path in tmp_path.glob('gtFine/*/*/*_polygons.json'):
        assert CITYSCAPES_NAME.fullmatch(
            path.name[:-len('_gtFine_polygons.json')])
        annotation = json.loads(path.read_text())
        assert (annotation['imgWidth'], annotation['imgHeight']) == (96, 48)
        for obj in annotation['objects']:
            assert set(obj) == {'label', 'polygon'}
            assert obj['label'].removesuffix('group') in name2label
            assert all(
                len(p) == 2 and all(isinstance(c, int) for c in p)
                for p in obj['polygon'])
        ids = png(str(path).replace('_polygons.json', '_labelIds.png'))
        assert ids.shape == (48, 96)
        assert set(
            np.unique(ids)) <= {label.id
                                for label in name2label.values()}


def convert(root, *args):
    return run_unchecked(
        tool('convert_cityscapes.py') + [str(root), *args], timeout=120)


def test_conversion_reproduces_the_official_train_ids_and_reruns_safely(
        tmp_path):
    from cityscapesscripts.helpers.labels import labels
    assert {
        label.id: label.trainId
        for label in labels if 0 <= label.trainId < 255
    } == PUBLISHED_TRAIN_IDS
    make_cityscapes_scenes(
        tmp_path, num_train=4, num_val=2, image_size=(96, 48))
    only_ids = next(tmp_path.glob('gtFine/val/*/*_polygons.json'))
    only_ids.unlink()  # this frame converts from its labelIds.png
    proc = convert(tmp_path, '--nproc', '2')
    assert proc.returncode == 0, proc.stderr
    assert '6 frames under' in proc.stdout and (
        '6 converted, 0 up to date, 0 failed' in proc.stdout)

    lut = np.full(256, 255, np.uint8)
    lut[list(PUBLISHED_TRAIN_IDS)] = list(PUBLISHED_TRAIN_IDS.values())
    seen = set()
    for ids_path in tmp_path.glob('gtFine/*/*/*_labelIds.png'):
        train_ids = png(str(ids_path).replace('_labelIds', '_labelTrainIds'))
        np.testing.assert_array_equal(train_ids, lut[png(ids_path)])
        seen |= set(np.unique(png(ids_path)).tolist())
    # an ignored label (ego vehicle), road, car (incl. cargroup)
    assert {1, 7, 26} <= seen

    outputs = sorted(tmp_path.glob('gtFine/*/*/*_labelTrainIds.png'))
    mtimes = [p.stat().st_mtime_ns for p in outputs]
    again = convert(tmp_path)
    assert again.returncode == 0 and ('0 converted, 6 up to date, 0 failed'
                                      in again.stdout)
    assert [p.stat().st_mtime_ns for p in outputs] == mtimes

    broken = next(tmp_path.glob('gtFine/train/*/*_polygons.json'))
    broken.write_text(broken.read_text().replace('"sky"', '"skyy"'))
    (tmp_path / 'gtFine/train/aachen/'
     'aachen_000099_000019_gtFine_labelIds.png').write_bytes(b'x')
    failed = convert(tmp_path)
    assert failed.returncode == 1 and ('0 converted, 5 up to date, 2 failed'
                                       in failed.stdout)
    assert (f"could not convert {broken}: ValueError: Label 'skyy' not known."
            in failed.stderr)
    assert ('aachen_000099_000019_gtFine_labelIds.png: UnidentifiedImageError'
            in failed.stderr)


def test_conversion_without_gtfine_names_the_download(tmp_path):
    proc = convert(tmp_path)
    assert proc.returncode == 1 and ('download gtFine_trainvaltest.zip'
                                     in proc.stderr)


@pytest.fixture
def ade20k(tmp_path):
    """A tiny ADE20K under tmp_path and the demo config pointed at it."""
    make_ade20k_scenes(tmp_path, num_train=3, num_val=1, image_size=(32, 32))
    return tmp_path / 'ADEChallengeData2016', config(
        'ade20k', tmp_path / 'ADEChallengeData2016')


@pytest.fixture
def cityscapes(tmp_path):
    make_cityscapes_scenes(
        tmp_path, num_train=3, num_val=1, image_size=(64, 32))
    return tmp_path, config('cityscapes', tmp_path)


def config(dataset, data_root):
    cfg = Config.fromfile(DEMOS[dataset])
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(data_root)
    return cfg


def check_fails(cfg, *messages):
    with pytest.raises(DatasetError) as info:
        check_datasets(cfg)
    assert all(m in str(info.value) for m in messages), str(info.value)


def test_checks_pass_on_good_data_and_say_what_they_checked(ade20k):
    root, cfg = ade20k
    checked = check_datasets(cfg)
    assert [(split, kind)
            for split, kind, _ in checked] == [('train', 'ADE20KDataset'),
                                               ('val', 'ADE20KDataset'),
                                               ('test', 'ADE20KDataset')]
    assert checked[0][2] == (
        f'3 images with annotations in {root}/images/training; '
        'label values of the first 3 checked')


def test_ade20k_image_without_annotation(ade20k):
    root, cfg = ade20k
    (root / 'annotations/training/ADE_train_00000002.png').unlink()
    check_fails(cfg,
                f'1 of 3 images in {root}/images/training have no annotation',
                f'{root}/annotations/training/ADE_train_00000002.png',
                'not found', 'restore them from ADEChallengeData2016.zip')


def test_ade20k_label_out_of_range(ade20k):
    root, cfg = ade20k
    path = root / 'annotations/training/ADE_train_00000001.png'
    labels = png(path).copy()
    labels[0, :3] = (151, 200, 255)
    Image.fromarray(labels).save(path)
    check_fails(
        cfg, f'{path} has label values [151, 200, 255] outside 0..150',
        'ADE20K annotations hold 0 (other) and the class numbers 1..150')


@pytest.mark.parametrize('mistake',
                         ['data_root one level up', 'renamed split folder'])
def test_ade20k_wrong_layout(ade20k, mistake):
    root, cfg = ade20k
    if mistake == 'data_root one level up':
        cfg.train_dataloader.dataset.data_root = str(root.parent)
        check_fails(cfg, f'folder not found: {root.parent}/images/training',
                    f"{root}/images/training exists: set data_root='{root}'")
    else:
        (root / 'images/training').rename(root / 'images/train')
        check_fails(cfg, f'folder not found: {root}/images/training',
                    '{images,annotations}/{training,validation}',
                    f"{root}/images has ['train', 'validation']",
                    'Download ADEChallengeData2016.zip')


def test_cityscapes_without_train_ids_names_the_conversion(cityscapes):
    root, cfg = cityscapes
    check_fails(
        cfg, f'3 of 3 images in {root}/leftImg8bit/train have no annotation',
        '_gtFine_labelTrainIds.png',
        f'python tools/convert_cityscapes.py {root}')


def test_cityscapes_label_ids_in_place_of_train_ids(cityscapes):
    root, cfg = cityscapes
    for path in root.glob('gtFine/*/*/*_labelIds.png'):
        path.with_name(path.name.replace(
            'labelIds', 'labelTrainIds')).write_bytes(path.read_bytes())
    check_fails(cfg, 'outside the train ids 0..18 and 255',
                'are these label ids rather than train ids?')


def test_image_and_annotation_sizes_must_match(ade20k):
    root, cfg = ade20k
    path = root / 'annotations/training/ADE_train_00000003.png'
    Image.fromarray(png(path)[:16]).save(path)
    check_fails(cfg, f'{path} is 32x16, its image',
                'ADE_train_00000003.jpg 32x32')


def test_a_split_list_names_the_images_checked(ade20k, tmp_path):
    root, cfg = ade20k
    (root / 'annotations/training/ADE_train_00000003.png').unlink()
    (root / 'train.txt').write_text('ADE_train_00000001\nADE_train_00000002\n')
    cfg.train_dataloader.dataset.ann_file = 'train.txt'
    check_datasets(cfg)  # the unannotated image is not in the list
    (root / 'train.txt').write_text('ADE_train_00000001\nADE_train_00000009\n')
    check_fails(cfg, '1 images listed in train.txt are not in',
                'ADE_train_00000009')


def test_check_dataset_tool_fails_in_seconds_with_the_fix(
        cityscapes, tmp_path):
    root, _ = cityscapes
    proc = run_unchecked(
        tool('check_dataset.py') + [
            str(DEMOS['cityscapes']), '--cfg-options',
            f'train_dataloader.dataset.data_root={root}'
        ],
        timeout=120)
    assert proc.returncode == 1
    assert (f'DatasetError: 3 of 3 images in {root}/leftImg8bit/train'
            in proc.stderr)
    assert 'python tools/convert_cityscapes.py' in proc.stderr


def test_pascal_context_generator_writes_the_converted_layout(tmp_path):
    """mmseg's conversion output: JPEGImages, SegmentationClassContext and
    the split lists, labels 0 (background) and PascalContextDataset59's
    class numbers, the ADE20K demo's scenes relabelled."""
    from mmseg.datasets import PascalContextDataset59
    for run in ('a', 'b'):
        make_pascal_context_scenes(
            tmp_path / run, num_train=3, num_val=2, image_size=(64, 48))
    base = tmp_path / 'a' / 'VOCdevkit' / 'VOC2010'
    lists = base / 'ImageSets' / 'SegmentationContext'
    train, val = ((lists / f'{split}.txt').read_text().split()
                  for split in ('train', 'val'))
    assert (train, val) == ([f'2008_{i:06d}' for i in (1, 2, 3)],
                            [f'2009_{i:06d}' for i in (1, 2)])
    assert files(base, 'JPEGImages/*') == [
        Path('JPEGImages', f'{n}.jpg') for n in train + val
    ]
    assert files(base, 'SegmentationClassContext/*') == [
        Path('SegmentationClassContext', f'{n}.png') for n in train + val
    ]
    classes = PascalContextDataset59.METAINFO['classes']
    assert all(classes[v - 1] == name for name, v in CONTEXT_DRAWN.items())
    ade = tmp_path / 'ade'  # the same scenes, in ADE20K's numbers
    make_ade20k_scenes(ade, num_train=3, num_val=2, image_size=(64, 48))
    to_context = {v: CONTEXT_DRAWN[name] for name, v in ADE_DRAWN.items()}
    to_context[0] = 0  # ADE20K's "other": background
    for name, ade_name in zip(
            train,
            sorted((ade /
                    'ADEChallengeData2016/annotations/training').iterdir())):
        labels = png(base / 'SegmentationClassContext' / f'{name}.png')
        np.testing.assert_array_equal(
            labels,
            np.vectorize(to_context.get)(png(ade_name)))
        assert Image.open(base / 'JPEGImages' / f'{name}.jpg').size == (64, 48)
    b = tmp_path / 'b' / 'VOCdevkit' / 'VOC2010'
    assert all(p.read_bytes() == (b / p.relative_to(base)).read_bytes()
               for p in base.rglob('*.*'))


@pytest.fixture
def pascal_context(tmp_path):
    make_pascal_context_scenes(
        tmp_path, num_train=3, num_val=1, image_size=(32, 32))
    root = tmp_path / 'VOCdevkit' / 'VOC2010'
    return root, config('pascal-context-59', root)


def test_pascal_context_checks_pass_on_good_data(pascal_context):
    root, cfg = pascal_context
    checked = check_datasets(cfg)
    assert [kind for _, kind, _ in checked] == ['PascalContextDataset59'] * 3
    assert checked[0][2] == (
        f'3 images with annotations in {root}/JPEGImages; '
        'label values of the first 3 checked')


def test_pascal_context_voc_labels_in_place_of_context_labels(pascal_context):
    root, cfg = pascal_context
    path = root / 'SegmentationClassContext/2008_000002.png'
    labels = png(path).copy()
    labels[0, :4] = 255  # VOC's object borders
    Image.fromarray(labels).save(path)
    check_fails(cfg, f'{path} has label values [255] outside 0..59',
                "is this Pascal VOC's SegmentationClass")


def test_pascal_context_unconverted_names_the_conversion(pascal_context):
    root, cfg = pascal_context
    (root / 'ImageSets/SegmentationContext/train.txt').unlink()
    check_fails(
        cfg, 'split list not found: '
        f'{root}/ImageSets/SegmentationContext/train.txt',
        'trainval_merged.json', 'tools/dataset_converters/pascal_context.py')
