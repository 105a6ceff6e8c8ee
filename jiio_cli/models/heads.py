"""Read-outs h(z) from a DEQ state: an image head and a pooled linear classifier head."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import check_groups, check_positive, conv3x3, interpolation_matrix, pair

__all__ = [
    "ClassifierHead",
    "ImageHead",
    "SpatialClassifierHead",
    "conv_tap_matrices",
    "shifted_taps",
]


def shifted_taps(matrix: Tensor, taps: int) -> Tensor:
    """Rows of U shifted for the taps of a zero-padded convolution, (taps, n_out, n_in).

    Tap i reads output row p + i − taps//2 of the upsampled signal, or zeros past the edge.
    """
    n_out = matrix.shape[0]
    half = taps // 2
    padded = F.pad(matrix, (0, 0, half, half))
    return torch.stack([padded[i : i + n_out] for i in range(taps)])


@functools.lru_cache(maxsize=64)
def conv_tap_matrices(
    state_size: tuple[int, int],
    image_size: tuple[int, int],
    kernel: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """A (H, k·h) and B (k·w, W): the shifted interpolation matrices of every conv tap
    side by side, so that each side of :meth:`ImageHead.upsampled_conv` is one product.
    Cached; callers must not modify them."""
    (h, w), (big_h, big_w), (k_h, k_w) = state_size, image_size, kernel
    with torch.inference_mode(False), torch.no_grad():
        a = shifted_taps(interpolation_matrix(h, big_h, device, dtype), k_h)  # (k, H, h)
        b = shifted_taps(interpolation_matrix(w, big_w, device, dtype), k_w)  # (k, W, w)
        return (
            a.permute(1, 0, 2).reshape(big_h, k_h * h),
            b.permute(0, 2, 1).reshape(k_w * w, big_w),
        )


class ImageHead(nn.Module):
    """Decode a state into an image in [0, 1]: ``σ(conv₃ₓ₃(upsample(z)))``.

    When z is smaller than the image (a half-resolution state) it is bilinearly
    upsampled first. Both steps are linear, so the head is computed in the cheaper
    order: with U_H, U_W the interpolation matrices and A_i, B_j their rows shifted for
    the conv's taps (i, j ∈ {0, 1, 2}, zero padding),

        image_o = σ(b_o + Σ_{i,j} A_i (Σ_c w_{o,c,i,j} z_c) B_jᵀ),

    a 1×1 convolution from C to 9c channels at the state's resolution, then two small
    matrix products per tap, instead of upsampling all C channels and convolving at the
    image's resolution. The result is the same function up to rounding
    (``tests/models/test_heads.py`` checks it against the upsample-then-convolve form, values
    and gradients); on the CPU the upsampling and its backward were most of the cost of
    a JIIO iteration on the shipped decoder.

    Args:
        channels: C, channels of z.
        image_channels: c, channels of the image.
        image_size: output (H, W), or one int for square images.

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
        if tuple(z.shape[2:]) == self.image_size:
            return torch.sigmoid(self.conv(z))
        return torch.sigmoid(self.upsampled_conv(z))

    def upsampled_conv(self, z: Tensor) -> Tensor:
        """conv₃ₓ₃(upsample(z)) (B, c, H, W) in the factorised order (see the class)."""
        batch, _, h, w = z.shape
        out_ch, in_ch, k_h, k_w = self.conv.weight.shape
        a, b = conv_tap_matrices((h, w), self.image_size, (k_h, k_w), z.device, z.dtype)
        # Output channel (o, i, j) of the 1×1 conv holds tap (i, j) of output o.
        weight = self.conv.weight.permute(0, 2, 3, 1).reshape(out_ch * k_h * k_w, in_ch, 1, 1)
        t = F.conv2d(z, weight.to(z.dtype))  # (B, c·k·k, h, w)
        # (B, c, i, j, h, w) -> (B, c, i, h, j, w): contract (j, w) with B, then (i, h) with A.
        t = t.view(batch, out_ch, k_h, k_w, h, w).permute(0, 1, 2, 4, 3, 5)
        u = t.reshape(batch, out_ch, k_h * h, k_w * w) @ b  # (B, c, k·h, W)
        image = a @ u  # (B, c, H, W)
        bias = self.conv.bias
        return image if bias is None else image + bias.to(z.dtype).view(1, out_ch, 1, 1)


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
