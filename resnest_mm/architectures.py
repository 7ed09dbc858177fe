"""Blocks per stage of each ResNeSt depth, shared by the backbone and weight
loading."""

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
