"""Read-outs h(z) from a DEQ state: an image head and a pooled linear classifier head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import check_groups, check_positive, conv3x3, pair

__all__ = ["ClassifierHead", "ImageHead", "SpatialClassifierHead"]


class ImageHead(nn.Module):
    """Decode a state into an image in [0, 1]: ``σ(conv₃ₓ₃(upsample(z)))``.

    Args:
        channels: C, channels of z.
        image_channels: c, channels of the image.
        image_size: output (H, W), or one int for square images. When z is smaller
            (a half-resolution state) it is bilinearly upsampled first.

    Shapes:
        z: (B, C, h, w) → image: (B, c, H, W).
    """

    def __init__(
        self, channels: int, image_channels: int, image_size: int | tuple[int, int]
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("image_channels", image_channels)
        self.image_size = pair(image_size, "image_size")
        self.conv = conv3x3(channels, image_channels, bias=True)

    def forward(self, z: Tensor) -> Tensor:
        """Map z (B, C, h, w) to an image (B, c, H, W) with values in [0, 1]."""
        if tuple(z.shape[2:]) != self.image_size:
            z = F.interpolate(z, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.conv(z))


class ClassifierHead(nn.Module):
    """Pooled linear read-out: ``logits = W · mean_{h,w} relu(GN(z)) + b``.

    Leading dimensions are kept: z of shape (*lead, C, H, W) gives features
    (*lead, C) and logits (*lead, K), so a (B, n, C, H, W) task batch works as is.

    Args:
        channels: C, channels of z.
        num_classes: K, number of logits.
        groups: GroupNorm groups; must divide C.
    """

    def __init__(self, channels: int, num_classes: int, groups: int = 8) -> None:
        super().__init__()
        check_groups(channels, groups)
        check_positive("num_classes", num_classes)
        self.norm = nn.GroupNorm(groups, channels)
        self.linear = nn.Linear(channels, num_classes)

    def features(self, z: Tensor) -> Tensor:
        """Pooled features (*lead, C) of z (*lead, C, H, W)."""
        lead = z.shape[:-3]
        y = F.relu(self.norm(z.reshape(-1, *z.shape[-3:])))
        return y.mean(dim=(-2, -1)).view(*lead, -1)

    def forward(self, z: Tensor) -> Tensor:
        """Logits (*lead, K) of z (*lead, C, H, W)."""
        return self.linear(self.features(z))


class SpatialClassifierHead(nn.Module):
    """Read-out that keeps coarse spatial layout: ``logits = W · vec(pool_P(z)) + b``.

    z is average-pooled to a P×P grid and flattened to C·P² features. Unlike a global
    mean after a normalisation (which leaves little more than constants to classify),
    where the strokes are survives, which is what digits are made of.

    Args:
        channels: C, channels of z.
        num_classes: K, number of logits.
        grid: P, side of the pooled grid.

    Shapes:
        z: (B, C, H, W) → features (B, C·P²) → logits (B, K).
    """

    def __init__(self, channels: int, num_classes: int, grid: int = 4) -> None:
        super().__init__()
        check_positive("channels", channels)
        check_positive("num_classes", num_classes)
        check_positive("grid", grid)
        self.grid = grid
        self.linear = nn.Linear(channels * grid * grid, num_classes)

    def features(self, z: Tensor) -> Tensor:
        """Pooled, flattened features (B, C·P²) of z (B, C, H, W)."""
        return F.adaptive_avg_pool2d(z, self.grid).flatten(1)

    def forward(self, z: Tensor) -> Tensor:
        """Logits (B, K) of z (B, C, H, W)."""
        return self.linear(self.features(z))
