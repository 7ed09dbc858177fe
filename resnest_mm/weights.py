"""Pretrained ResNeSt weights from any source: find the layout, convert to
our keys, check the fit.

ImageNet weights come in several layouts. :func:`convert_checkpoint` finds
which one a checkpoint is in from marker keys (see ``LAYOUTS``), converts it
to our keys (which are mmdet's and mmseg's) and says what it found.
:func:`load_converted` then reads depth, stem width and radix from the
tensors and refuses a checkpoint that does not fit the model, or lacks
weights the model needs, naming the keys. :func:`load_pretrained` does all of
it for ``init_cfg=dict(type='Pretrained', checkpoint=...)``, where the
checkpoint may also be a short name (``resnest50``) resolved to the authors'
published files, or an ``open-mmlab://`` name resolved as mmengine does.

Every file is read with :func:`~resnest_mm.safe_load.load_checkpoint_safely`,
so loading weights never runs code from them.
"""
import hashlib
import logging
import os
import re
import urllib.parse
from collections import Counter
from dataclasses import dataclass

import torch
from mmengine.logging import print_log

from .architectures import STAGE_BLOCKS
from .safe_load import load_checkpoint_safely

# The authors' release files (the `resnest` 0.0.5 package fetches the same
# files from s3.us-west-1.wasabisys.com/resnest/torch/). The suffix is the
# first 8 hex digits of the file's sha256, as torch.hub checks it: the
# `_model_sha256` tables of that package's resnest/torch/resnest.py (the four
# networks) and resnest/torch/ablation.py (the "fast" ablation networks).
RELEASE_URL = ('https://github.com/zhanghang1989/ResNeSt/releases/download/'
               'weights_step1/{}.pth')
PUBLISHED = {
    name: RELEASE_URL.format(f'{name}-{sha256}')
    for name, sha256 in (
        ('resnest50', '528c19ca'),
        ('resnest101', '22405ba7'),
        ('resnest200', '75117900'),
        ('resnest269', '0cc87c48'),
        ('resnest50_fast_1s1x64d', 'd8fbf808'),
        ('resnest50_fast_2s1x64d', '44938639'),
        ('resnest50_fast_4s1x64d', 'f74f3fc3'),
        ('resnest50_fast_1s2x40d', '32830b84'),
        ('resnest50_fast_2s2x40d', '9d126481'),
        ('resnest50_fast_4s2x40d', '41d14ed0'),
        ('resnest50_fast_1s4x24d', 'd4a4f76f'),
    )
}
# mmdet's and mmseg's ResNeSt configs name their ImageNet weights
# open-mmlab://resnest50 (101, 200); mmengine maps these to OpenMMLab's own
# files (``resnest50_d2-7497a55b.pth`` ...: the authors' weights in mmdet's
# keys, under ``state_dict``), from which mmdet's published APs were trained.
# They are resolved through mmengine's own tables, as its
# ``load_from_openmmlab`` does.
OPENMMLAB_SCHEMES = ('open-mmlab://', 'openmmlab://')

# How the backbone's keys are named: for each scheme, the key of the first
# stem conv and of the first block's split-attention conv (which tells a
# ResNeSt from a ResNet, whose 3x3 conv is conv2.weight).
_SCHEME_MARKERS = {
    # also mmdet's and mmseg's ResNeSt
    'ours': ('stem.0.weight', 'layer1.0.conv2.conv.weight'),
    'mmpretrain': ('stem.0.conv.weight', 'layer1.0.conv2.conv.weight'),
    'authors': ('conv1.0.weight', 'layer1.0.conv2.conv.weight'),
    # the authors' detectron2 fork (zhanghang1989/detectron2-ResNeSt,
    # detectron2/modeling/backbone/resnet.py and splat.py)
    'detectron2': ('stem.conv1_1.weight', 'res2.0.conv2.conv.weight'),
}
# Where a backbone's keys may sit: at the top, in an mmdet/mmseg model, in
# a detectron2 model (its FPN backbone wraps the ResNet as ``bottom_up``).
_PREFIXES = ('', 'backbone.', 'backbone.bottom_up.')
# The classifier of each scheme that has one at the backbone's level.
_CLASSIFIERS = {'authors': 'fc.', 'detectron2': 'linear.'}
# (prefix of the backbone, key scheme): (layout name, example keys).
LAYOUTS = {
    ('', 'authors'):
    ("authors' release / timm",
     'conv1.0.weight, bn1.weight, layer1.0.conv2.conv.weight, fc.weight'),
    ('backbone.', 'mmpretrain'):
    ('mmpretrain classifier', 'backbone.stem.0.conv.weight, '
     'backbone.layer1.0.conv2.conv.weight, head.fc.weight '
     '(optionally inside "state_dict")'),
    ('backbone.', 'ours'): ('mmdet/mmseg model',
                            '"state_dict": backbone.stem.0.weight, '
                            'backbone.layer1.0.conv2.conv.weight, neck.*, '
                            'rpn_head.* / roi_head.* / decode_head.*'),
    ('', 'ours'):
    ("ours (resnest_mm, an mmdet/mmseg ResNeSt backbone, OpenMMLab's "
     'open-mmlab://resnest* files)', 'stem.0.weight, '
     'layer1.0.conv2.conv.weight (optionally inside "state_dict")'),
    ('backbone.bottom_up.', 'detectron2'):
    ("detectron2 model (the authors' resnest*_detectron ImageNet files, "
     'detectron2-ResNeSt detectors)',
     '(optionally inside "model") backbone.bottom_up.stem.conv1_1.weight, '
     'backbone.bottom_up.res2.0.conv1.norm.weight, '
     'backbone.bottom_up.res2.0.conv2.conv.weight, '
     'backbone.fpn_*, roi_heads.*'),
    ('', 'detectron2'): ('detectron2 ResNeSt backbone', 'stem.conv1_1.weight, '
                         'stem.conv1_1.norm.weight, res2.0.conv2.conv.weight, '
                         'res2.0.shortcut.norm.weight'),
}
# Keys every plain ResNeSt has, so a checkpoint must give them. Others (DCN
# offsets, plugins) are added modules that ImageNet weights cannot hold.
_PLAIN_KEY = re.compile(
    r'(stem\.\d+|layer\d+\.\d+\.'
    r'(conv1|bn1|conv2\.(conv|bn0|fc1|bn1|fc2)|conv3|bn3|downsample\.\d+))'
    r'\.(weight|bias|running_mean|running_var)')
_DEPTHS = {blocks: depth for depth, blocks in STAGE_BLOCKS.items()}


@dataclass
class Converted:
    """A checkpoint's backbone in our keys, and where it came from."""
    state_dict: dict
    layout: str  # which layout was found, e.g. "authors' release / timm"
    # where the backbone's keys sat in the source, e.g. 'backbone.'
    prefix: str
    scheme: str  # how the source named them: a key of _SCHEME_MARKERS
    # keys of the source that are not backbone weights (classifier, heads)
    dropped: list


@dataclass(frozen=True)
class Architecture:
    """What a state dict in our keys says about the network that made it."""
    stage_blocks: tuple
    stem_channels: int
    radix: int
    groups: int
    width: int  # channels of layer1's split-attention conv (per split)

    @property
    def depth(self):
        """The depth with these blocks per stage, or None."""
        return _DEPTHS.get(self.stage_blocks)

    @property
    def name(self):
        return (f'ResNeSt-{self.depth}' if self.depth else
                f'a ResNeSt with {self.stage_blocks} blocks per stage')

    def model_kwargs(self):
        """``ResNeSt`` arguments that build this network (``avd_first`` is not
        in the weights)."""
        kwargs = dict(
            depth=self.depth,
            stem_channels=self.stem_channels,
            radix=self.radix,
            groups=self.groups)
        if self.groups > 1:
            kwargs['base_width'] = self.width // self.groups
        return kwargs


@dataclass
class LoadReport:
    """What :func:`load_converted` found and did, by key name."""
    source: str
    layout: str
    architecture: Architecture
    dropped: list  # source keys that are not backbone weights
    # model keys ImageNet weights cannot hold (DCN offsets, plugins): kept
    missing: list
    unexpected: list  # checkpoint keys the model lacks: not loaded

    def __str__(self):
        lines = [
            f'loaded {self.source}: {self.layout} layout, '
            f'{self.architecture.name}'
        ]
        if self.dropped:
            lines.append(
                f'left out {len(self.dropped)} keys that are not backbone '
                f'weights: {key_summary(self.dropped)}')
        if self.missing:
            lines.append(f'not in the checkpoint, kept as initialised: '
                         f'{key_summary(self.missing)}')
        if self.unexpected:
            lines.append(
                f'not in the model, not loaded: {key_summary(self.unexpected)}'
            )
        return '; '.join(lines)


def resolve_checkpoint(checkpoint):
    """A local file for ``checkpoint``: a short name, an ``open-mmlab://``
    name, an http(s) URL, or a path.

    Short names and URLs are downloaded once into the torch hub cache
    (``torch.hub.get_dir()/checkpoints``), where mmengine and torchvision
    keep theirs too; offline, the error says which file to put there.
    """
    checkpoint = os.fspath(checkpoint)
    if checkpoint in PUBLISHED:
        return _cached_download(PUBLISHED[checkpoint], check_hash=True)
    if checkpoint.startswith(OPENMMLAB_SCHEMES):
        return _openmmlab_file(checkpoint)
    if checkpoint.startswith(('http://', 'https://')):
        return download_checkpoint(checkpoint)
    if os.path.isfile(checkpoint):
        return checkpoint
    raise FileNotFoundError(
        f'checkpoint {checkpoint!r} is not a file. Give the path of a '
        f'checkpoint in any accepted layout, an http(s) URL, an '
        f'open-mmlab:// name, or one of {sorted(PUBLISHED)}.')


def download_checkpoint(url):
    """The torch hub cache's copy of the file at ``url``, downloaded if
    absent: where mmengine's ``load_from_http`` puts it."""
    return _cached_download(url, check_hash=False)


def _openmmlab_file(checkpoint):
    """The file mmengine's ``load_from_openmmlab`` reads for ``checkpoint``.

    mmengine's tables give the URL (``mmengine/hub/openmmlab.json``, updated
    by ``$MMENGINE_HOME/open_mmlab.json``, deprecated names renamed); a URL
    is cached in the torch hub cache, anything else is a path under
    mmengine's home. No hash is checked, as mmengine checks none.
    """
    # Here, not at the top: mmengine.runner imports the whole Runner, which
    # `import resnest_mm` does not need. _get_mmengine_home is private, but
    # it is where load_from_openmmlab looks.
    from mmengine.runner.checkpoint import (_get_mmengine_home,
                                            get_deprecated_model_names,
                                            get_external_models)
    name = checkpoint.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    urls = get_external_models()
    if name not in urls:
        raise FileNotFoundError(
            f'{checkpoint} is not in mmengine\'s table of OpenMMLab weights '
            f'(mmengine/hub/openmmlab.json); ResNeSt names there: '
            f'{sorted(n for n in urls if n.startswith("resnest"))}.')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return download_checkpoint(url)
    path = os.path.join(_get_mmengine_home(), url)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{checkpoint} is the file {path} (mmengine\'s home, set by '
            f'$MMENGINE_HOME), which does not exist.')
    return path


def _cached_download(url, check_hash):
    """The torch hub cache's copy of ``url``, downloaded if absent.

    With ``check_hash`` the file name carries its sha256 prefix
    (``name-<sha256[:8]>.pth``), checked on download and on every use.
    """
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    path = os.path.join(torch.hub.get_dir(), 'checkpoints', filename)
    hash_prefix = torch.hub.HASH_REGEX.search(filename).group(
        1) if check_hash else None
    if os.path.isfile(path):
        if hash_prefix and not _sha256(path).startswith(hash_prefix):
            raise RuntimeError(
                f'{path} is not the published {filename}: its sha256 does not '
                f'start with {hash_prefix}. It is probably truncated: delete '
                f'it and download it again from {url}')
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix)
    except OSError as err:  # no network, DNS, HTTP errors, timeouts
        raise FileNotFoundError(
            f'could not download {url} ({err}). Offline, download that file '
            f'on another machine and put it at {path} (the torch hub cache, '
            f'set by $TORCH_HOME); it is then used from there.') from err
    return path


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def convert_checkpoint(checkpoint, prefix=None):
    """Find the layout of a loaded checkpoint and return its backbone in our
    keys.

    Args:
        checkpoint (dict): What ``torch.load`` returned: a state dict, or a
            dict with one under ``'state_dict'`` (mmengine's checkpoints) or
            ``'model'`` (detectron2's).
        prefix (str, optional): Where the backbone keys sit, if neither at
            the top nor under ``backbone.``.

    Raises:
        ValueError: no known layout; the message lists them.
    """
    state_dict = state_dict_of(checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError(
            f'expected a state dict, got a {type(checkpoint).__name__}. ' +
            _expected_layouts())
    for where in ([prefix] if prefix else _PREFIXES):
        for scheme, (stem, split_attention) in _SCHEME_MARKERS.items():
            if (where + stem in state_dict
                    and where + split_attention in state_dict):
                layout = LAYOUTS.get((where, scheme),
                                     (f'{scheme} keys under {where!r}', ))[0]
                return _convert(state_dict, where, scheme, layout)
    sample = ', '.join(list(state_dict)[:6])
    raise ValueError(f'unknown checkpoint layout (first keys: {sample}). '
                     f'{_expected_layouts()}')


def state_dict_of(checkpoint):
    """The state dict in a loaded checkpoint: itself, or the one under
    ``'state_dict'`` (mmengine) or ``'model'`` (detectron2)."""
    if not isinstance(checkpoint, dict):
        return None
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def _expected_layouts():
    rows = '; '.join(f'{name}: {keys}' for name, keys in LAYOUTS.values())
    return ('Expected the weights of a ResNeSt in one of these layouts: '
            f'{rows}.')


def _convert(state_dict, prefix, scheme, layout):
    """Rename the backbone's keys; keep the rest as ``dropped``."""
    ours, dropped = {}, []
    classifier = _CLASSIFIERS.get(scheme)
    for key, value in state_dict.items():
        inner = key[len(prefix):]
        if not key.startswith(prefix) or (classifier
                                          and inner.startswith(classifier)):
            dropped.append(key)
        else:
            ours[inner] = value
    if scheme == 'authors':
        ours = {_rename_authors(k): v for k, v in ours.items()}
    elif scheme == 'mmpretrain':
        ours = _rename_mmpretrain(ours)
    elif scheme == 'detectron2':
        ours = _rename_detectron2(ours)
    return Converted(ours, layout, prefix, scheme, dropped)


def _rename_authors(key):
    """``conv1.*`` is their deep stem, ``bn1`` its last norm."""
    if key.startswith('conv1.'):
        return 'stem.' + key[len('conv1.'):]
    if key.startswith('bn1.'):
        return 'stem.7.' + key[len('bn1.'):]
    return key


def _rename_mmpretrain(state_dict):
    """mmpretrain's stem is three ConvModules, and a shortcut without its
    avg pool (stride 1) numbers conv and norm 0, 1; ours has them at 1, 2."""
    no_pool = {
        k.split('.downsample.')[0]
        for k in state_dict if '.downsample.0.' in k
    }
    out = {}
    for key, value in state_dict.items():
        match = re.match(r'stem\.(\d)\.(conv|bn)\.(.*)', key)
        if match:
            index, kind, rest = match.groups()
            key = f'stem.{3 * int(index) + (kind == "bn")}.{rest}'
        else:
            block, sep, rest = key.partition('.downsample.')
            if sep and block in no_pool:
                index, rest = rest.split('.', 1)
                key = f'{block}.downsample.{int(index) + 1}.{rest}'
        out[key] = value
    return out


# detectron2's names (a conv owns its norm as ``.norm``) -> ours, within a
# block of stage resN (our layer N-1).
_DETECTRON2_BLOCK = (
    ('conv1.norm.', 'bn1.'),
    ('conv3.norm.', 'bn3.'),
    ('shortcut.norm.', 'downsample.2.'),
    ('shortcut.', 'downsample.1.'),  # after its norm: a prefix of it
    ('conv2_offset.', 'conv2.conv.conv_offset.'),  # DCN offsets
)


def _rename_detectron2(state_dict):
    """Rename the authors' detectron2 keys to ours.

    The stem's ``conv1_{1,2,3}`` (each with its ``.norm``) are our
    ``stem.0/1``, ``stem.3/4``, ``stem.6/7``; stage ``resN`` is ``layerN-1``.
    A DCN block's offset conv (``conv2_offset``) is grouped by deformable
    group where mmcv's ``conv_offset`` is dense: it becomes the equal dense
    conv, zero between groups (:func:`_densify_offset_conv`).
    """
    out = {}
    for key, value in state_dict.items():
        stem = re.match(r'stem\.conv1_(\d)\.(norm\.)?(.*)', key)
        block = re.match(r'res(\d)\.(\d+)\.(.*)', key)
        if stem:
            index, norm, rest = stem.groups()
            key = f'stem.{3 * (int(index) - 1) + bool(norm)}.{rest}'
        elif block:
            stage, index, rest = block.groups()
            for theirs, ours in _DETECTRON2_BLOCK:
                if rest.startswith(theirs):
                    rest = ours + rest[len(theirs):]
                    break
            key = f'layer{int(stage) - 1}.{index}.{rest}'
        out[key] = value
    for key in out:
        if key.endswith('conv2.conv.conv_offset.weight'):
            conv1 = out[key.replace('conv2.conv.conv_offset', 'conv1')]
            out[key] = _densify_offset_conv(out[key], conv1.shape[0])
    return out


def _densify_offset_conv(weight, in_channels):
    """A grouped conv's weight ``(out, in / groups, kh, kw)`` as the equal
    dense conv's ``(out, in, kh, kw)``: group g's block on the diagonal,
    zeros elsewhere."""
    groups = in_channels // weight.shape[1]
    if groups == 1:
        return weight
    dense = weight.new_zeros(weight.shape[0], in_channels, *weight.shape[2:])
    rows, cols = weight.shape[0] // groups, weight.shape[1]
    for g in range(groups):
        dense[g * rows:(g + 1) * rows,
              g * cols:(g + 1) * cols] = weight[g * rows:(g + 1) * rows]
    return dense


def read_architecture(state_dict):
    """Blocks per stage, stem width, radix, groups and width, read from tensor
    shapes (our keys)."""
    blocks = Counter()
    for key in state_dict:
        match = re.match(r'layer(\d+)\.(\d+)\.conv1\.weight$', key)
        if match:
            blocks[int(match.group(1))] += 1
    conv1 = state_dict['layer1.0.conv1.weight']  # (width, inplanes, 1, 1)
    # (width * radix, width / (groups * radix), 3, 3)
    split = state_dict['layer1.0.conv2.conv.weight']
    width = conv1.shape[0]
    radix = split.shape[0] // width
    stem = state_dict.get('stem.6.weight')
    return Architecture(
        stage_blocks=tuple(blocks[i] for i in sorted(blocks)),
        stem_channels=stem.shape[0] if stem is not None else None,
        radix=radix,
        groups=width // (split.shape[1] * radix),
        width=width)


def check_architecture(arch, model):
    """Raise ``ValueError`` naming each way ``arch`` does not fit ``model``,
    and the fix."""
    problems = []
    for stage, (theirs, ours) in enumerate(
            zip(arch.stage_blocks, model.stage_blocks), 1):
        if theirs != ours:
            fix = (f'depth={arch.depth}'
                   if arch.depth else 'the depth of the checkpoint')
            problems.append(
                f'checkpoint is {arch.name} ({theirs} blocks in stage '
                f'{stage}), model is ResNeSt-{model.depth} ({ours}): build '
                f'the model with {fix} or use ResNeSt-{model.depth} weights')
            break
    if (arch.stem_channels is not None
            and arch.stem_channels != model.stem_channels):
        problems.append(
            f'checkpoint stem is {arch.stem_channels} channels wide, model '
            f'has stem_channels={model.stem_channels}: '
            f'set stem_channels={arch.stem_channels} '
            f'(the authors use 64 for ResNeSt-50 and 128 from ResNeSt-101 on)')
    if arch.radix != model.radix:
        problems.append(
            f'checkpoint has radix={arch.radix}, model radix={model.radix}: '
            f'set radix={arch.radix}')
    if arch.groups != model.groups:
        problems.append(
            f'checkpoint has groups={arch.groups}, '
            f'model groups={model.groups}: set groups={arch.groups}')
    if problems:
        raise ValueError('checkpoint does not fit the model: ' +
                         '; '.join(problems))


def load_converted(model, converted, source='checkpoint'):
    """Check ``converted`` against ``model``, load it, and log what was found
    and left out.

    Raises ``ValueError``, leaving the model untouched, if the architecture
    differs, if weights of the plain network are missing or if shapes
    differ. Returns a :class:`LoadReport`, which is also logged.
    """
    state_dict = converted.state_dict
    arch = read_architecture(state_dict)
    try:
        check_architecture(arch, model)
    except ValueError as err:
        raise ValueError(f'{source}: {err}') from None
    own = model.state_dict()
    missing = [
        k for k in own
        if k not in state_dict and not k.endswith('num_batches_tracked')
    ]
    required = [k for k in missing if _PLAIN_KEY.fullmatch(k)]
    if required:
        raise ValueError(
            f'{source} ({converted.layout}) lacks {len(required)} weights of '
            f'the backbone: {key_summary(required)}. Use a checkpoint of the '
            'whole backbone.')
    mismatched = [
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(
            f'{source}: shapes in the checkpoint differ from the model '
            f'(checkpoint vs model): {key_summary(mismatched)}')
    unexpected = [k for k in state_dict if k not in own]
    model.load_state_dict({k: v
                           for k, v in state_dict.items() if k in own},
                          strict=False)
    report = LoadReport(source, converted.layout, arch, converted.dropped,
                        missing, unexpected)
    print_log(
        str(report),
        logger='current',
        level=logging.WARNING if unexpected else logging.INFO)
    return report


def load_pretrained(model, checkpoint, prefix=None, map_location='cpu'):
    """Load ``checkpoint`` (a path, URL or short name, any known layout) into
    ``model``."""
    path = resolve_checkpoint(checkpoint)
    converted = convert_checkpoint(
        load_checkpoint_safely(path, map_location), prefix)
    return load_converted(model, converted, source=path)


def key_summary(keys, limit=8):
    """The keys themselves, or beyond ``limit`` their top-level modules and
    counts."""
    if len(keys) <= limit:
        return ', '.join(keys)
    groups = Counter(k.split('.')[0] for k in keys)
    return ', '.join(f'{group}.* ({n})' for group, n in groups.items())
