"""DropBlock (Ghiasi et al. 2018, "DropBlock: A regularization method for
convolutional networks")."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class DropBlock2d(nn.Module):
    """Zero random ``block_size x block_size`` squares of each feature map
    while training: ``(B, C, H, W) -> (B, C, H, W)``, same dtype and memory
    format. Neighbouring activations are correlated, so dropping single
    units barely regularises a conv map; dropping squares does.

    As the paper's Algorithm 1 (docs/configs_and_training.md): block starts
    drawn per sample and channel where a whole block fits, grown to blocks by
    a max pool; kept values rescaled so that the mean is unchanged.

    Args:
        drop_prob (float): Target fraction of activations to drop, in [0, 1).
        block_size (int): Side of the squares. Default: 3, as the authors'.
    """

    def __init__(self, drop_prob: float, block_size: int = 3):
        super().__init__()
        if not 0 <= drop_prob < 1:
            raise ValueError(f'drop_prob must be in [0, 1), got {drop_prob}')
        if block_size < 1:
            raise ValueError(f'block_size must be >= 1, got {block_size}')
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if not self.training or self.drop_prob == 0:
            return x
        batch, channels, height, width = x.shape
        bs = min(self.block_size, height, width)
        valid_h, valid_w = height - bs + 1, width - bs + 1
        gamma = self.drop_prob / bs**2 * height * width / (valid_h * valid_w)
        starts = x.new_empty(batch, channels, valid_h,
                             valid_w).bernoulli_(gamma)
        # padded by bs - 1, the max pool marks each pixel in a block that
        # starts at one of the bs x bs positions up-left of it
        keep = 1 - F.max_pool2d(F.pad(starts, (bs - 1, ) * 4), bs, stride=1)
        # Counted in float32: a float16 sum overflows past 65504 elements.
        scale = keep.numel() / keep.sum(dtype=torch.float32).clamp_min(1)
        return x * keep * scale  # x first: the product takes x's memory format

    def extra_repr(self):
        return f'drop_prob={self.drop_prob}, block_size={self.block_size}'
