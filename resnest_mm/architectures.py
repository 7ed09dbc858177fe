"""Blocks per stage and stem width of each ResNeSt depth.

Shared by the backbone, weight loading, the releases, tools and tests.
"""

# depth: bottleneck blocks in stages 1-4 (Zhang et al. 2020, and the
# authors' ablation depths 14 and 26).
STAGE_BLOCKS = {
    14: (1, 1, 1, 1),
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    269: (3, 30, 48, 8),
}

# depth: the authors' deep-stem output channels (twice their ``stem_width``):
# 64 in their ResNeSt-50 release, 128 in 101, 200 and 269 (resnest/torch/
# resnest.py). Depths without a release follow that rule: 14 and 26 as
# timm's resnest14d/26d, 152 as its neighbours. The releases
# (:mod:`resnest_mm.releases`), tools and tests all read it here.
STEM_CHANNELS = {
    14: 64,
    26: 64,
    50: 64,
    101: 128,
    152: 128,
    200: 128,
    269: 128,
}
