"""What the benchmark compares: ours, upstream mmdet's, the authors' and
ResNet, same weights."""
import copy
from pathlib import Path

import torch

from resnest_mm import ResNeSt, convert_checkpoint
from resnest_mm.architectures import STEM_CHANNELS
from ..references import authors_layer4

AUTHORS_DEPTHS = (50, 101, 200, 269)
CP_SUFFIX = ' (with_cp)'
NO_RECOMPUTE_SUFFIX = ' (recompute_activations=False)'
COMPILED_SUFFIX = ' (compiled)'
FUSED_SUFFIX = ' (conv-bn fused)'
VARIANT_SUFFIXES = (CP_SUFFIX, NO_RECOMPUTE_SUFFIX, COMPILED_SUFFIX,
                    FUSED_SUFFIX)
UPSTREAM_DEPTHS = (50, 101, 152, 200)  # mmdet's ResNeSt has no 14, 26 or 269
RESNET_DEPTHS = (18, 34, 50, 101, 152)
CONFIGS = Path(__file__).parents[3] / 'configs'


class AuthorsBackbone(torch.nn.Module):
    """The authors' network up to ``layer4``: their forward ends in the
    classifier."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return authors_layer4(self.net, x)


def base_name(name):
    """The model a variant (``'ours (compiled)'``) is built from
    (``'ours'``)."""
    for suffix in VARIANT_SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def inference_only(name):
    """Whether model ``name`` is timed in inference only: a fused model has
    no BatchNorm left to train."""
    return name.endswith(FUSED_SUFFIX)


def fused(model):
    """A copy of ``model`` in eval mode with each BatchNorm folded into the
    conv before it (``mmcv.cnn.fuse_conv_bn``)."""
    from mmcv.cnn import fuse_conv_bn
    model = copy.deepcopy(model)
    model.eval()  # upstream's eval() returns None, so not chained
    return fuse_conv_bn(model)


def build_models(depth,
                 with_cp=False,
                 no_recompute=False,
                 compile=False,
                 fuse_conv_bn=False):
    """``{name: backbone}``; every ResNeSt holds the same weights.

    ``with_cp`` adds ours and upstream with gradient checkpointing per block,
    ``no_recompute`` ours without its memory-saving path, ``compile`` ours
    and upstream under ``torch.compile`` (default inductor settings),
    ``fuse_conv_bn`` ours and upstream with the BatchNorms folded into the
    convs (inference only).
    """
    from mmdet.models.backbones import ResNeSt as UpstreamResNeSt
    from mmdet.models.backbones import ResNet

    stem = STEM_CHANNELS[depth]  # the authors' widths
    ours = ResNeSt(depth=depth, stem_channels=stem)
    models = {
        'ours': ours,
        'upstream mmdet': UpstreamResNeSt(depth=depth, stem_channels=stem)
    }
    if with_cp:
        models['ours' + CP_SUFFIX] = ResNeSt(
            depth=depth, stem_channels=stem, with_cp=True)
        models['upstream mmdet' + CP_SUFFIX] = UpstreamResNeSt(
            depth=depth, stem_channels=stem, with_cp=True)
    if no_recompute:
        models['ours' + NO_RECOMPUTE_SUFFIX] = ResNeSt(
            depth=depth, stem_channels=stem, recompute_activations=False)
    if depth in AUTHORS_DEPTHS:
        from resnest.torch import resnest
        authors = getattr(resnest, f'resnest{depth}')(pretrained=False)
        ours.load_state_dict(
            convert_checkpoint(authors.state_dict()).state_dict)
        models['authors'] = AuthorsBackbone(authors)
    else:
        ours.init_weights()
    for name, model in models.items():
        if name not in ('ours', 'authors'):
            model.load_state_dict(ours.state_dict())
    if compile:
        for name in ('ours', 'upstream mmdet'):
            twin = type(models[name])(depth=depth, stem_channels=stem)
            twin.load_state_dict(ours.state_dict())
            models[name + COMPILED_SUFFIX] = torch.compile(twin)
    if fuse_conv_bn:
        for name in ('ours', 'upstream mmdet'):
            models[name + FUSED_SUFFIX] = fused(models[name])
    resnet_depth = depth if depth in RESNET_DEPTHS else 50
    models[f'ResNet-{resnet_depth} (mmdet)'] = ResNet(depth=resnet_depth)
    return models


def last_output(out):
    return out[-1] if isinstance(out, (tuple, list)) else out


def check_same_function(models, x):
    """Largest relative difference of each ResNeSt's last stage from ours
    (eval, fp32); variants of one model compute its function, except that
    fused ones round differently, so they are compared too."""
    outputs = {}
    for name, model in models.items():
        if 'ResNet' not in name and (base_name(name) == name
                                     or inference_only(name)):
            model.eval()  # upstream's eval() returns None, so not chained
            with torch.no_grad():
                outputs[name] = last_output(model(x))
    ref = outputs.pop('ours')
    return {
        name: ((out - ref).norm() / ref.norm()).item()
        for name, out in outputs.items()
    }


def build_with_backbone(config, upstream=False):
    """``config``'s model for one process, weights as constructed; with
    ``upstream``, the ResNeSt of the config's package (mmdet's or mmseg's)
    built from the same backbone arguments instead of ours."""
    from mmengine.model import revert_sync_batchnorm

    from resnest_tools.runner_setup import build_model, load_config, task_of
    cfg = load_config(str(config))
    model = build_model(cfg)
    if upstream:
        if task_of(cfg) == 'detection':
            from mmdet.models.backbones import ResNeSt
        else:
            from mmseg.models.backbones import ResNeSt
        kwargs = {k: v for k, v in cfg.model.backbone.items() if k != 'type'}
        model.backbone = revert_sync_batchnorm(ResNeSt(**kwargs))
    return model
