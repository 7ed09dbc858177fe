"""Write ResNeSt weights from any known layout as a checkpoint in ours, and say
what was found.

    python tools/convert_weights.py SRC DST [--verify] [--size 224]

SRC is a file in any layout that ``resnest_mm`` accepts (the authors'
release / timm, mmpretrain, an mmdet or mmseg model, ours, the authors'
detectron2 files and detectron2 models; ``.pth`` or ``.safetensors``), an
http(s) URL or a short name (``resnest50``, ``open-mmlab://resnest101``,
...). DST gets a
plain state dict in our keys (also mmdet's and mmseg's), which
``torch.load(weights_only=True)`` reads anywhere. ``--verify`` builds the
source's own implementation where it is importable, loads SRC into it
unconverted and prints the largest difference between its stage-4 output and
ours (eval mode, the same random input); it exits with status 1 above a
relative 1e-4. Both are built with ``avd_first=False``: the weights do not
record it.
"""
import argparse
import pickle
import sys

import torch

from resnest_mm import (ResNeSt, convert_checkpoint, load_checkpoint_safely,
                        resolve_checkpoint)
from resnest_mm.architectures import read_architecture
from resnest_mm.layouts import state_dict_of
from resnest_mm.weights import key_summary, load_converted
from resnest_tools.references import authors_layer4

TOLERANCE = 1e-4  # fp32, relative to the largest output


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        'src',
        help='checkpoint file, http(s) URL or short name (e.g. resnest50)')
    parser.add_argument('dst', help='where to write the converted state dict')
    parser.add_argument(
        '--verify',
        action='store_true',
        help="compare with the source's own implementation on a random input")
    parser.add_argument(
        '--size', type=int, default=224, help='input size for --verify')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        path = resolve_checkpoint(args.src)
        checkpoint = load_checkpoint_safely(path)
        converted = convert_checkpoint(checkpoint)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        sys.exit(f'error: {err}')  # each names what is wrong and the fix
    arch = read_architecture(converted.state_dict)
    if arch.depth is None:
        sys.exit(f'{path}: {arch.name} matches no ResNeSt depth '
                 f'({sorted(ResNeSt.arch_settings)}); cannot build it')
    ours = ResNeSt(**model_kwargs(arch))
    report = load_converted(ours, converted, source=path)
    torch.save(ours.state_dict(), args.dst)
    print(
        f'layout:     {report.layout}\n'
        f'network:    {arch.name} (blocks per stage {arch.stage_blocks}, stem '
        f'{arch.stem_channels}, radix {arch.radix}, groups {arch.groups})\n'
        f'parameters: {sum(p.numel() for p in ours.parameters()):,}')
    if report.dropped:
        print(
            f'left out:   {key_summary(report.dropped)} (not backbone weights)'
        )
    print(f'wrote:      {args.dst}')
    if args.verify:
        sys.exit(verify(converted, checkpoint, arch, ours, args.size))


def model_kwargs(arch):
    """The ``ResNeSt`` arguments of the network ``arch`` describes (the weights
    hold no ``avd_first``)."""
    kwargs = dict(
        depth=arch.depth,
        stem_channels=arch.stem_channels,
        radix=arch.radix,
        groups=arch.groups)
    if arch.groups > 1:
        kwargs['base_width'] = arch.width // arch.groups
    return kwargs


def verify(converted, checkpoint, arch, ours, size):
    """Compare stage-4 outputs with the source's implementation; 0 if they
    agree."""
    source_state_dict = state_dict_of(checkpoint)
    try:
        name, reference, forward = build_reference(converted, arch,
                                                   source_state_dict)
    except ImportError as err:
        print(f'verify:     skipped, no independent implementation of the '
              f'{converted.layout} layout to compare with ({err})')
        return 0
    x = torch.randn(
        2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ours.eval()
    reference.eval()
    with torch.no_grad():
        expected = forward(x)
        actual = ours(x)[-1]
    diff = (actual - expected).abs().max().item()
    relative = diff / expected.abs().max().item()
    print(
        f'verify:     stage-4 output vs {name}: largest difference {diff:.3g} '
        f'(relative {relative:.3g})')
    if relative > TOLERANCE:
        print(
            f'verify:     MISMATCH, above the relative tolerance {TOLERANCE}')
        return 1
    return 0


def build_reference(converted, arch, source_state_dict):
    """The source layout's own implementation: (name, model with SRC's keys,
    stage-4 forward)."""
    weights = {
        k[len(converted.prefix):]: v
        for k, v in source_state_dict.items() if k.startswith(converted.prefix)
    }
    kwargs = model_kwargs(arch)
    if converted.scheme == 'detectron2':
        raise ImportError("the authors' detectron2 fork is not a package")
    if converted.scheme == 'authors':
        from resnest.torch.resnet import Bottleneck, ResNet
        name = "the authors' resnest package"
        model = ResNet(
            Bottleneck,
            list(arch.stage_blocks),
            radix=arch.radix,
            groups=arch.groups,
            bottleneck_width=kwargs.get('base_width', 64),
            deep_stem=True,
            stem_width=arch.stem_channels // 2,
            avg_down=True,
            avd=True,
            avd_first=False)
        del model.fc  # the classifier is not compared
        weights = {k: v for k, v in weights.items() if not k.startswith('fc.')}

        def forward(x):
            return authors_layer4(model, x)
    else:
        if converted.scheme == 'mmpretrain':
            from mmpretrain.models.backbones import ResNeSt as Reference
            name = 'mmpretrain'
            if 'base_width' in kwargs:
                kwargs['width_per_group'] = kwargs.pop('base_width')
        else:  # our keys are upstream mmdet's
            from mmdet.models.backbones.resnest import ResNeSt as Reference
            name = "mmdet's ResNeSt"
            if arch.depth not in Reference.arch_settings:
                raise ImportError(f'{name} has no depth {arch.depth}')
        model = Reference(out_indices=(3, ), **kwargs)

        def forward(x):
            return model(x)[-1]

    # strict: the source's own keys, unconverted
    model.load_state_dict(weights)
    return name, model, forward


if __name__ == '__main__':
    main()
