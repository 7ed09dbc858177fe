"""The demo data in COCO's panoptic layout, and the check of that layout."""
import json

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from PIL import Image
from pycocotools.coco import COCO

from resnest_tools.dataset_checks import (DatasetError,
                                          check_coco_panoptic_dataset)
from resnest_tools.demo_data import make_coco_panoptic_shapes

CLASSES = ('circle', 'square', 'triangle', 'background')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    make_coco_panoptic_shapes(
        root, num_train=3, num_val=2, image_size=(64, 64))
    return root


def dataset_cfg(root, split='val'):
    """The dataset of mmdet's coco_panoptic.py, at ``root``."""
    return dict(
        type='CocoPanopticDataset',
        data_root=str(root),
        ann_file=f'annotations/panoptic_{split}2017.json',
        data_prefix=dict(
            img=f'{split}2017/', seg=f'annotations/panoptic_{split}2017/'),
        metainfo=dict(
            classes=CLASSES,
            thing_classes=CLASSES[:3],
            stuff_classes=CLASSES[3:]))


def segment_ids(path):
    rgb = np.asarray(Image.open(path), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def test_segments_are_the_instance_masks_and_the_rest_is_stuff(root):
    """Against pycocotools' rasterisation of the instance polygons."""
    panoptic = json.loads(
        (root / 'annotations/panoptic_val2017.json').read_text())
    instances = COCO(str(root / 'annotations/instances_val2017.json'))
    assert {c['name']: c['isthing']
            for c in panoptic['categories']} == dict(
                circle=1, square=1, triangle=1, background=0)
    for ann in panoptic['annotations']:
        ids = segment_ids(root / 'annotations/panoptic_val2017' /
                          ann['file_name'])
        segments = {s['id']: s for s in ann['segments_info']}
        assert set(np.unique(ids)) == set(segments)  # no void, none unlisted
        objects = instances.loadAnns(
            instances.getAnnIds(imgIds=ann['image_id']))
        stuff = np.ones(ids.shape, bool)
        for obj in objects:
            mask = instances.annToMask(obj).astype(bool)
            segment = ids == obj['id']
            assert segments[obj['id']]['category_id'] == obj['category_id']
            assert segments[obj['id']]['area'] == segment.sum()
            iou = (mask & segment).sum() / (mask | segment).sum()
            assert iou > 0.9, iou  # the two rasterisers differ at the edges
            stuff &= ~segment
        background = [s for s in segments.values() if s['category_id'] == 4]
        assert len(background) == 1
        assert np.array_equal(ids == background[0]['id'], stuff)


def test_mmdet_loads_it(root):
    from mmdet.datasets import CocoPanopticDataset
    init_default_scope('mmdet')
    cfg = dataset_cfg(root, 'train')
    cfg.pop('type')
    dataset = CocoPanopticDataset(
        **cfg,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadPanopticAnnotations'),
        ])
    sample = dataset[0]
    labels = np.unique(sample['gt_seg_map'])
    # things are 0..2, stuff 3 (after them), nothing ignored (255)
    assert set(labels) <= {0, 1, 2, 3} and 3 in labels
    assert len(sample['gt_bboxes']) == len(sample['gt_masks']) >= 1


def summary_of(root):
    return check_coco_panoptic_dataset(dataset_cfg(root))


def test_check_summarises_a_good_dataset(root):
    assert summary_of(root).startswith('2 images, ')


def _unlist_a_segment(root):
    path = root / 'annotations/panoptic_val2017.json'
    panoptic = json.loads(path.read_text())
    panoptic['annotations'][0]['segments_info'].pop(0)
    path.write_text(json.dumps(panoptic))


@pytest.mark.parametrize('mutate,message', [
    (lambda root: (root / 'annotations/panoptic_val2017.json').unlink(),
     'annotation file not found'),
    (lambda root: (root / 'annotations/panoptic_val2017.json').write_text(
        (root / 'annotations/instances_val2017.json').read_text()),
     'is it an instances_*.json?'),
    (lambda root:
     (root / 'annotations/panoptic_val2017/000000000002.png').unlink(),
     '000000000002.png not found'),
    (lambda root: Image.new('L', (64, 64)).save(
        root / 'annotations/panoptic_val2017/000000000001.png'),
     'not a COCO panoptic segment map'),
    (_unlist_a_segment, 'does not list'),
])
def test_check_names_what_to_fix(tmp_path, mutate, message):
    make_coco_panoptic_shapes(
        tmp_path, num_train=1, num_val=2, image_size=(64, 64))
    mutate(tmp_path)
    with pytest.raises(DatasetError, match=message.replace('*', r'\*')):
        summary_of(tmp_path)


def test_check_refuses_unknown_classes(root):
    cfg = dataset_cfg(root)
    cfg['metainfo']['classes'] = ('circle', 'hexagon')
    with pytest.raises(DatasetError, match=r"\['hexagon'\]"):
        check_coco_panoptic_dataset(cfg)
    # no classes set: the dataset's own, COCO's 133, are not these
    cfg.pop('metainfo')
    with pytest.raises(DatasetError, match='thing_classes'):
        check_coco_panoptic_dataset(cfg)
