"""The four-block convolutional image encoder of Prototypical Networks (Snell et al. 2017).

Each block is a 3×3 convolution to C channels (padding 1), BatchNorm, ReLU and a 2×2
max-pool; four blocks take a 28×28 image to C×1×1, i.e. an embedding e ∈ ℝᶜ (an S×S
image gives C·⌊…⌊S/2⌋…/2⌋² features, flattened).
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import check_positive

__all__ = ["Conv4Encoder", "conv4_embedding_size"]

BLOCKS = 4


def conv4_embedding_size(channels: int, image_size: int) -> int:
    """Size of the flattened embedding of an S×S image: C · (S // 16)² (floors per pool)."""
    side = image_size
    for _ in range(BLOCKS):
        side //= 2
    if side < 1:
        raise ValueError(f"image_size {image_size} is too small for {BLOCKS} 2×2 pools")
    return channels * side * side


class Conv4Encoder(nn.Module):
    """Images (N, c, S, S) → embeddings (N, E), E = :func:`conv4_embedding_size`.

    Args:
        image_channels: c.
        channels: C, filters of every block (64 in the standard network).
    """

    def __init__(self, image_channels: int = 1, channels: int = 64) -> None:
        super().__init__()
        check_positive("channels", channels)
        layers: list[nn.Module] = []
        width = image_channels
        for _ in range(BLOCKS):
            layers += [
                nn.Conv2d(width, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            width = channels
        self.blocks = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.blocks(images).flatten(1)
