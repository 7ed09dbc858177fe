"""The deep stem of ResNeSt (ResNet-D): three 3x3 convs instead of one 7x7."""
from typing import Optional

from mmcv.cnn import build_conv_layer, build_norm_layer
from torch import Tensor, nn

from .ops import norm_act


class DeepStem(nn.Sequential):
    """Three 3x3 conv-norm-ReLU, the first with stride 2:
    ``(N, in_channels, H, W) -> (N, stem_channels, H / 2, W / 2)``.

    A Sequential, so that the keys stay upstream's ``stem.0`` to ``stem.7``;
    run as conv-norm-act triples, so that each takes the memory-saving path.
    """

    def __init__(self, in_channels: int, stem_channels: int,
                 conv_cfg: Optional[dict], norm_cfg: dict):
        half = stem_channels // 2
        layers = []
        for cin, cout, stride in ((in_channels, half, 2), (half, half, 1),
                                  (half, stem_channels, 1)):
            layers += [
                build_conv_layer(
                    conv_cfg, cin, cout, 3, stride, padding=1, bias=False),
                build_norm_layer(norm_cfg, cout)[1],
                nn.ReLU(inplace=True)
            ]
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        # indexed, not zip() over one iterator: torch 2.1's dynamo misreads
        # that idiom and feeds every conv of the stem the first one's input
        layers = list(self)
        for i in range(0, len(layers), 3):
            x = norm_act(layers[i](x), layers[i + 1], layers[i + 2])
        return x
