"""Fail in seconds, before any model is built, on a dataset a config cannot
use.

``check_datasets(cfg)`` walks the config's dataloaders, unwraps dataset
wrappers (RepeatDataset, ConcatDataset, ...) and runs the check for each
dataset type it knows. Each error names the path and what to fix.
"""
import inspect
import json
import os
import os.path as osp

import numpy as np
from mmengine.registry import DATASETS
from mmengine.utils import scandir
from PIL import Image


class DatasetError(ValueError):
    """A dataset folder or annotation file that training or testing cannot
    use."""


def check_datasets(cfg, splits=('train', 'val', 'test')):
    """Check every dataset of ``cfg``'s ``{split}_dataloader`` for the given
    splits.

    Returns what was checked, ``[(split, dataset type, summary)]``.
    """
    checked = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader:
            for dataset in _leaf_datasets(loader['dataset']):
                check = CHECKS.get(dataset.get('type'))
                if check is not None:
                    summary = check(dataset, scope=cfg.get('default_scope'))
                    checked.append((split, dataset['type'], summary))
    return checked


def _leaf_datasets(dataset):
    if 'datasets' in dataset:
        for d in dataset['datasets']:
            yield from _leaf_datasets(d)
    elif 'dataset' in dataset:
        yield from _leaf_datasets(dataset['dataset'])
    else:
        yield dataset


def _load_coco_json(ann_file, hint, kind, published, entry_keys, advice=''):
    """A COCO-style annotation file: a dict of ``images``, ``annotations``
    and ``categories`` lists whose first entries have ``entry_keys[list]``.

    ``kind`` and ``published`` (the file's published name) go into the
    errors, ``advice`` after a wrong entry's.
    """
    if not osp.isfile(ann_file):
        raise DatasetError(f'annotation file not found: {ann_file} {hint}')
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(
            f'{ann_file} is not valid JSON ({err}); is it truncated? '
            'Download it again.') from None
    missing = [
        k for k in ('images', 'annotations', 'categories')
        if not isinstance(coco, dict) or not isinstance(coco.get(k), list)
    ]
    if missing:
        raise DatasetError(
            f'{ann_file} is not a {kind} annotation file: it has no '
            f'{missing} list(s). Expected {published} as published by '
            'COCO (images, annotations, categories).')
    for name, keys in entry_keys.items():
        entry = coco[name][:1]
        if entry and any(k not in entry[0] for k in keys):
            raise DatasetError(
                f'{ann_file} is not a {kind} annotation file: entries must '
                f'have {keys}, got {sorted(entry[0])}{advice}')
    return coco


def check_coco_dataset(dataset, scope='mmdet', max_images_checked=20):
    """Check a ``CocoDataset`` config: the annotation file, the image folder
    and the classes.

    Returns a one-line summary.
    """
    root = dataset.get('data_root') or ''
    ann_file = osp.join(root, dataset['ann_file'])
    img_dir = osp.join(root, (dataset.get('data_prefix') or {}).get('img', ''))
    hint = (
        f"(data_root={root!r}, ann_file={dataset['ann_file']!r}). "
        'Point data_root '
        'at a COCO folder with annotations/, train2017/ and val2017/, or make '
        'demo data with: python tools/make_demo_data.py coco data/coco')
    coco = _load_coco_json(
        ann_file, hint, 'COCO', 'instances_*.json',
        dict(
            images=('id', 'file_name', 'width', 'height'),
            annotations=('id', 'image_id', 'category_id', 'bbox'),
            categories=('id', 'name')))
    if not osp.isdir(img_dir):
        raise DatasetError(f'image folder not found: {img_dir} {hint}')
    absent = [
        im['file_name'] for im in coco['images'][:max_images_checked]
        if not osp.isfile(osp.join(img_dir, im['file_name']))
    ]
    if absent:
        raise DatasetError(
            f'{len(absent)} of the first {max_images_checked} images listed '
            f'in {ann_file} are not in {img_dir}, e.g. {absent[:3]}')

    names = [c['name'] for c in coco['categories']]
    explicit = (dataset.get('metainfo') or {}).get('classes')
    if explicit:
        # each must exist: a misspelt class would silently never train
        unknown = [c for c in explicit if c not in names]
        if unknown:
            raise DatasetError(
                f'classes {unknown} of the config are not categories '
                f'of {ann_file}: {names}')
    else:
        # the dataset class's own, e.g. the 80 COCO classes; a subset is fine
        classes = DATASETS.get(
            f"{scope}.{dataset['type']}").METAINFO['classes']
        if not set(classes) & set(names):
            raise DatasetError(
                f'none of the categories of {ann_file} ({names[:10]}) are '
                f"classes of {dataset['type']} ({list(classes)[:5]}...); "
                "set the dataset's "
                "metainfo=dict(classes=(...)) and the heads' num_classes")
    return (f"{len(coco['images'])} images, "
            f"{len(coco['annotations'])} objects in {ann_file}")


ADE20K_SOURCE = ('Download ADEChallengeData2016.zip '
                 '(http://data.csail.mit.edu/places/ADEchallenge/'
                 'ADEChallengeData2016.zip) and unzip it into data/ade/, '
                 'or make demo data with: '
                 'python tools/make_demo_data.py ade20k data/ade')
CITYSCAPES_SOURCE = (
    'Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from '
    'https://www.cityscapes-dataset.com/downloads/, '
    'unzip both into data/cityscapes/ and run: '
    'python tools/convert_cityscapes.py data/cityscapes; '
    'or make demo data with: python '
    'tools/make_demo_data.py cityscapes data/cityscapes '
    '(and the same conversion)')


def check_ade20k_dataset(dataset, scope='mmseg', max_labels_checked=50):
    """Check an ``ADE20KDataset`` config: the layout, an annotation per image,
    values 0..150.

    Expects ``ADEChallengeData2016/{images,annotations}/{training,validation}``
    as unzipped. Label values (0 "other", 1..150 the classes) are read from the
    first ``max_labels_checked`` annotations only, which keeps the check to
    seconds.
    """
    return _check_segmentation_folders(
        dataset,
        scope,
        layout='{images,annotations}/{training,validation} (it is the '
        'unzipped ADEChallengeData2016/)',
        source=ADE20K_SOURCE,
        values=np.arange(151),
        values_text='0..150',
        values_fix=(
            'ADE20K annotations hold 0 (other) and the class numbers 1..150; '
            'is this folder from another dataset?'),
        unannotated_fix=(
            'restore them from ADEChallengeData2016.zip, or remove those '
            'images'),
        max_labels_checked=max_labels_checked)


def check_cityscapes_dataset(dataset, scope='mmseg', max_labels_checked=50):
    """Check a ``CityscapesDataset`` config: the layout, train-id labels per
    image, values.

    Expects ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and their
    ``gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png``, which
    ``tools/convert_cityscapes.py`` makes. Label values (train ids 0..18, 255
    ignored) are read from the first ``max_labels_checked`` annotations only.
    """
    root = dataset.get('data_root') or '.'
    convert = f'python tools/convert_cityscapes.py {root}'
    return _check_segmentation_folders(
        dataset,
        scope,
        layout='{leftImg8bit,gtFine}/{train,val}/<city>/',
        source=CITYSCAPES_SOURCE,
        values=np.append(np.arange(19), 255),
        values_text='the train ids 0..18 and 255',
        values_fix=('are these label ids rather than train ids? '
                    f'Make train ids with: {convert}'),
        unannotated_fix=(
            f'make them from the *_gtFine_polygons.json with: {convert}'),
        max_labels_checked=max_labels_checked)


PASCAL_CONTEXT_SOURCE = (
    'Download VOCtrainval_03-May-2010.tar '
    '(http://host.robots.ox.ac.uk/pascal/VOC/voc2010/) and '
    'trainval_merged.json (https://codalabuser.blob.core.windows.net/public/'
    'trainval_merged.json), unpack the tar into data/ and make the labels '
    "with mmseg's tools/dataset_converters/pascal_context.py (see "
    'configs/segmentation/README.md); or make demo data with: '
    'python tools/make_demo_data.py pascal_context data')


def check_pascal_context_dataset(dataset,
                                 scope='mmseg',
                                 max_labels_checked=50):
    """Check a ``PascalContextDataset59`` (or ``PascalContextDataset``)
    config: the layout, the split list, an annotation per image, values
    0..59.

    Expects ``VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext}`` and
    ``ImageSets/SegmentationContext/{train,val}.txt``, which mmseg's
    conversion writes from ``trainval_merged.json``. Both datasets read the
    same labels (0 background, 1..59 the classes; the 59-class one ignores
    0). Label values are read from the first ``max_labels_checked``
    annotations only.
    """
    return _check_segmentation_folders(
        dataset,
        scope,
        layout='JPEGImages/, SegmentationClassContext/ and '
        'ImageSets/SegmentationContext/ (it is VOCdevkit/VOC2010/)',
        source=PASCAL_CONTEXT_SOURCE,
        values=np.arange(60),
        values_text='0..59',
        values_fix=('Pascal Context labels hold 0 (background) and the '
                    'classes 1..59; is this Pascal VOC\'s SegmentationClass '
                    '(255 borders) rather than the converted '
                    'SegmentationClassContext?'),
        unannotated_fix=("make them with mmseg's tools/dataset_converters/"
                         'pascal_context.py from trainval_merged.json'),
        max_labels_checked=max_labels_checked)


def _check_segmentation_folders(dataset, scope, *, layout, source, values,
                                values_text, values_fix, unannotated_fix,
                                max_labels_checked):
    """What mmseg's ``BaseSegDataset`` needs: images, an annotation for each,
    valid labels.

    Images and annotations are paired by name, as mmseg pairs them (the
    dataset class's suffixes unless the config sets others). Returns a summary.
    """
    root = dataset.get('data_root') or ''
    prefix = dataset.get('data_prefix') or {}
    img_dir = osp.join(root, prefix.get('img_path', ''))
    ann_dir = osp.join(root, prefix.get('seg_map_path', ''))
    defaults = inspect.signature(
        DATASETS.get(f"{scope}.{dataset['type']}")).parameters
    img_suffix = dataset.get('img_suffix', defaults['img_suffix'].default)
    seg_suffix = dataset.get('seg_map_suffix',
                             defaults['seg_map_suffix'].default)
    for folder in (img_dir, ann_dir):
        if not osp.isdir(folder):
            raise DatasetError(f'folder not found: {folder}. '
                               f'{_layout_fix(root, folder, layout, source)}')
    images = _names(img_dir, img_suffix)
    # a split list names the images used, as mmseg reads it
    if dataset.get('ann_file'):
        split_list = osp.join(root, dataset['ann_file'])
        if not osp.isfile(split_list):
            raise DatasetError(
                f'split list not found: {split_list}. '
                f'{_layout_fix(root, split_list, layout, source)}')
        with open(split_list) as f:
            listed = {line.strip() for line in f if line.strip()}
        if listed - images:
            raise DatasetError(
                f'{len(listed - images)} images listed in '
                f"{dataset['ann_file']} "
                f'are not in {img_dir}, e.g. {sorted(listed - images)[:3]}')
        images = listed
    if not images:
        raise DatasetError(f'no *{img_suffix} images in {img_dir}. {source}')
    unannotated = sorted(images - _names(ann_dir, seg_suffix))
    if unannotated:
        raise DatasetError(
            f'{len(unannotated)} of {len(images)} images in {img_dir} '
            'have no annotation: '
            f'{[osp.join(ann_dir, n + seg_suffix) for n in unannotated[:3]]} '
            'not found; '
            f'{unannotated_fix}')
    sample = sorted(images)[:max_labels_checked]
    for name in sample:
        ann_path = osp.join(ann_dir, name + seg_suffix)
        img_path = osp.join(img_dir, name + img_suffix)
        # the image: header only
        with Image.open(ann_path) as ann, Image.open(img_path) as img:
            if ann.size != img.size:
                raise DatasetError(
                    f'{ann_path} is {ann.size[0]}x{ann.size[1]}, its image '
                    f'{img_path} {img.size[0]}x{img.size[1]}; they must match')
            if ann.mode not in ('L', 'P'):
                raise DatasetError(
                    f'{ann_path} is a {ann.mode} image, not a label map (one '
                    f'channel of class values); {values_fix}')
            outside = np.setdiff1d(np.asarray(ann), values)
        if outside.size:
            raise DatasetError(
                f'{ann_path} has label values {outside[:10].tolist()} outside '
                f'{values_text}; {values_fix}')
    return (f'{len(images)} images with annotations in {img_dir}; '
            'label values of the first '
            f'{len(sample)} checked')


def _names(folder, suffix):
    """File names (relative, without ``suffix``) of every ``*suffix`` under
    ``folder``."""
    return {
        path[:-len(suffix)]
        for path in scandir(folder, suffix, recursive=True)
    }


def _layout_fix(root, folder, layout, source):
    """For a missing ``folder`` (or file): the data_root that has it, or what
    is there and ``source``."""
    if root and not osp.isdir(root):
        return f'data_root {root!r} does not exist. {source}'
    wanted = osp.relpath(folder, root or '.')
    for child in sorted(os.listdir(root or '.')):
        if osp.exists(osp.join(root, child, wanted)):
            return (f'{osp.join(root, child, wanted)} exists: set '
                    f'data_root={osp.join(root, child)!r}')
    found = osp.dirname(folder)
    while found and not osp.isdir(found):
        found = osp.dirname(found)
    entries = sorted(os.listdir(found or '.'))
    return (f'data_root={root!r} should hold {layout}; '
            f'{found or "."} has {entries[:10]}. '
            f'{source}')


COCO_PANOPTIC_SOURCE = (
    'Download panoptic_annotations_trainval2017.zip from '
    'https://cocodataset.org/#download (with the train2017/val2017 images), '
    'unzip it into data/coco/, then unzip '
    'annotations/panoptic_{train,val}2017.zip inside data/coco/annotations/; '
    'or make demo data with: '
    'python tools/make_demo_data.py coco_panoptic data/coco')


def check_coco_panoptic_dataset(dataset, scope='mmdet', max_images_checked=20):
    """Check a ``CocoPanopticDataset`` config: the panoptic json, the images,
    a segment PNG per image whose ids its ``segments_info`` names, classes.

    Expects ``annotations/panoptic_{split}2017.json`` and, unzipped from the
    archive inside it, ``annotations/panoptic_{split}2017/*.png`` (segment
    id ``R + 256 G + 256^2 B`` per pixel). PNGs are read for the first
    ``max_images_checked`` images only, which keeps the check to seconds.
    Returns a one-line summary.
    """
    root = dataset.get('data_root') or ''
    prefix = dataset.get('data_prefix') or {}
    ann_file = osp.join(root, dataset['ann_file'])
    img_dir = osp.join(root, prefix.get('img', ''))
    seg_dir = osp.join(root, prefix.get('seg', ''))
    hint = (f"(data_root={root!r}, ann_file={dataset['ann_file']!r}). "
            f'{COCO_PANOPTIC_SOURCE}')
    coco = _load_coco_json(
        ann_file, hint, 'COCO panoptic', 'panoptic_*.json',
        dict(
            annotations=('image_id', 'file_name', 'segments_info'),
            categories=('id', 'name', 'isthing')),
        '; is it an instances_*.json?')
    for folder in (img_dir, seg_dir):
        if not osp.isdir(folder):
            raise DatasetError(f'folder not found: {folder} {hint}')
    segments = {a['image_id']: a for a in coco['annotations']}
    for image in coco['images'][:max_images_checked]:
        img_path = osp.join(img_dir, image['file_name'])
        # the dataset finds an image's PNG by its name, as mmdet does
        seg_path = osp.join(seg_dir,
                            image['file_name'].replace('.jpg', '.png'))
        for path in (img_path, seg_path):
            if not osp.isfile(path):
                raise DatasetError(f'{path} not found (listed in {ann_file})')
        with Image.open(seg_path) as seg, Image.open(img_path) as img:
            if seg.size != img.size:
                raise DatasetError(
                    f'{seg_path} is {seg.size[0]}x{seg.size[1]}, its image '
                    f'{img_path} {img.size[0]}x{img.size[1]}; they must match')
            if seg.mode != 'RGB':
                raise DatasetError(
                    f'{seg_path} is a {seg.mode} image, not a COCO panoptic '
                    'segment map (RGB-encoded segment ids)')
            rgb = np.asarray(seg, dtype=np.int64)
        ids = set(
            np.unique(rgb[..., 0] + 256 * rgb[..., 1] +
                      65536 * rgb[..., 2]).tolist()) - {0}  # 0: void
        listed = {
            s['id']
            for s in segments.get(image['id'], {}).get('segments_info', [])
        }
        if ids - listed:
            raise DatasetError(
                f'{seg_path} has segment ids {sorted(ids - listed)[:5]} that '
                f"the segments_info of image {image['id']} in {ann_file} "
                'does not list; are the PNGs from another split or version?')

    names = [c['name'] for c in coco['categories']]
    classes = (dataset.get('metainfo') or {}).get('classes') or DATASETS.get(
        f"{scope}.{dataset['type']}").METAINFO['classes']
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise DatasetError(
            f'classes {unknown[:10]} of the config are not categories of '
            f'{ann_file}: {names[:10]}; set the dataset\'s metainfo=dict('
            'classes=..., thing_classes=..., stuff_classes=...) and the '
            "heads' class numbers")
    return (f"{len(coco['images'])} images, "
            f"{sum(len(a['segments_info']) for a in coco['annotations'])} "
            f'segments in {ann_file}')


#: dataset type -> its check; other types are not checked
CHECKS = {
    'CocoDataset': check_coco_dataset,
    'ADE20KDataset': check_ade20k_dataset,
    'CityscapesDataset': check_cityscapes_dataset,
    'CocoPanopticDataset': check_coco_panoptic_dataset,
    'PascalContextDataset59': check_pascal_context_dataset,
    'PascalContextDataset': check_pascal_context_dataset,
}
