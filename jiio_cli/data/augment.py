"""Training-image augmentation: random shifts and smooth elastic warps.

A decoder trained on a few thousand digits learns them by heart (its held-out score
peaks and falls while the training loss keeps falling). Augmentation shows it new
variants of the same digits each epoch:

- ``shift:N`` moves each image by an integer offset (dy, dx), each uniform on
  {−N, …, N}, filling with zeros. Integer offsets resample nothing, so the digits stay
  exactly as sharp as the originals.
- ``elastic:A`` warps each image by a smooth random displacement field
  d(p) = A · (bicubic upsampling of a 4×4 grid of N(0, 1) draws), in pixels, and samples
  u(p + d(p)) bilinearly (zeros outside). Strokes bend and thicken locally, as in
  Simard et al.'s elastic distortions, at the cost of a slight bilinear blur.
- ``affine:A`` maps each image by a random affine transform about its centre, with the
  ranges of the glyph renderer's per-drawer jitter scaled by A: rotation ±12°·A, scale
  1 + U(−0.15, 0.1)·A, shear ±0.15·A, shift ±A·3/64 of the image's width. It imitates
  how two drawers of one glyph differ, where ``elastic`` imitates one drawer's wobble.

All draws come from an explicit generator, so a run stays reproducible batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.data.glyphs import (
    CANVAS,
    JITTER_ROTATION,
    JITTER_SCALE,
    JITTER_SHEAR,
    JITTER_SHIFT,
)

__all__ = ["Augmentation", "augment", "parse_augmentation"]

AugmentKind = Literal["none", "shift", "elastic", "affine"]

_ELASTIC_GRID = 4


@dataclass(frozen=True)
class Augmentation:
    """Which augmentation, and how strong.

    Attributes:
        kind: ``none``, ``shift``, ``elastic`` or ``affine``.
        amount: the largest shift N in pixels (``shift``, an integer ≥ 1), the
            displacement scale A in pixels (``elastic``, > 0) or the strength A of the
            affine jitter (``affine``, 0 < A ≤ 2); 0 for ``none``.
    """

    kind: AugmentKind = "none"
    amount: float = 0.0

    def __post_init__(self) -> None:
        if self.kind == "none" and self.amount != 0:
            raise ValueError("augmentation 'none' takes no amount")
        if self.kind == "shift" and (self.amount < 1 or self.amount != int(self.amount)):
            raise ValueError(f"a shift needs a whole number of pixels >= 1, got {self.amount}")
        if self.kind == "elastic" and not 0 < self.amount <= 8:
            raise ValueError(f"an elastic warp needs 0 < amount <= 8 pixels, got {self.amount}")
        if self.kind == "affine" and not 0 < self.amount <= 2:
            raise ValueError(f"an affine jitter needs 0 < strength <= 2, got {self.amount}")

    @property
    def is_identity(self) -> bool:
        return self.kind == "none"

    def describe(self) -> str:
        """The option's text form (``none``, ``shift:2``, ``elastic:1.5``, ``affine:1``)."""
        if self.kind == "none":
            return "none"
        amount = int(self.amount) if self.kind == "shift" else self.amount
        return f"{self.kind}:{amount:g}"


def parse_augmentation(text: str) -> Augmentation:
    """Read ``none``, ``shift:N``, ``elastic:A`` or ``affine:A``; ValueError with the reason
    otherwise."""
    kind, _, amount = text.strip().partition(":")
    if kind == "none" and not amount:
        return Augmentation()
    if kind not in ("shift", "elastic", "affine") or not amount:
        raise ValueError("expected none, shift:N, elastic:A or affine:A")
    try:
        value = float(amount)
    except ValueError:
        raise ValueError(f"expected a number after {kind}:, got {amount!r}") from None
    return Augmentation(kind, value)  # type: ignore[arg-type]


def augment(images: Tensor, augmentation: Augmentation, generator: torch.Generator) -> Tensor:
    """Augmented copies of a batch of images.

    Args:
        images: (B, C, H, W) in [0, 1].
        augmentation: what to apply.
        generator: CPU generator for the random offsets or fields.

    Returns:
        (B, C, H, W) on the images' device and dtype; the input itself for ``none``
        (no draws are made, so other draws from the generator are unchanged).
    """
    if augmentation.is_identity:
        return images
    if augmentation.kind == "shift":
        return _shift(images, int(augmentation.amount), generator)
    if augmentation.kind == "affine":
        return _affine(images, augmentation.amount, generator)
    return _elastic(images, augmentation.amount, generator)


def _shift(images: Tensor, largest: int, generator: torch.Generator) -> Tensor:
    batch, _, height, width = images.shape
    offsets = torch.randint(-largest, largest + 1, (batch, 2), generator=generator)
    offsets = offsets.to(images.device)
    padded = F.pad(images, (largest, largest, largest, largest))
    # Output pixel (i, j) reads padded pixel (i + N − dy, j + N − dx): the image moves by (dy, dx).
    rows = torch.arange(height, device=images.device) + largest - offsets[:, :1]  # (B, H)
    cols = torch.arange(width, device=images.device) + largest - offsets[:, 1:]  # (B, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    moved = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return moved.permute(0, 3, 1, 2).contiguous()


def _elastic(images: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    batch, _, height, width = images.shape
    coarse = torch.randn(batch, 2, _ELASTIC_GRID, _ELASTIC_GRID, generator=generator)
    coarse = coarse.to(images.device, images.dtype)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    field = field * scale  # (B, 2, H, W): (dx, dy) in pixels
    ys = torch.arange(height, device=images.device, dtype=images.dtype)
    xs = torch.arange(width, device=images.device, dtype=images.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    # grid_sample wants sample positions in [−1, 1] (align_corners=True: −1 and 1 are the
    # centres of the corner pixels).
    sample_x = (grid_x + field[:, 0]) * (2 / max(width - 1, 1)) - 1
    sample_y = (grid_y + field[:, 1]) * (2 / max(height - 1, 1)) - 1
    grid = torch.stack((sample_x, sample_y), dim=-1)  # (B, H, W, 2)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    ).clamp(0, 1)


def _affine(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    batch, _, height, width = images.shape
    # One row of uniform draws in [−1, 1] per image: angle, scale, shear, shift x, shift y.
    u = torch.rand(batch, 5, generator=generator, dtype=torch.float64) * 2 - 1
    angle = torch.deg2rad(JITTER_ROTATION * strength * u[:, 0])
    low, high = JITTER_SCALE  # uniform on [low, high], as the renderer draws it
    scale = 1 + strength * ((low + high) / 2 + (high - low) / 2 * u[:, 1])
    shear = JITTER_SHEAR * strength * u[:, 2]
    # Canvas pixels as a fraction of the width, in [−1, 1] units (2 per width).
    shift = 2 * JITTER_SHIFT / CANVAS * strength * u[:, 3:]
    cos, sin = angle.cos(), angle.sin()
    # Forward map A = scale · R(angle) · [[1, shear], [0, 1]], then the shift. grid_sample
    # reads the source at A⁻¹(p − shift) for each output position p.
    forward = (
        torch.stack(
            (
                torch.stack((cos, cos * shear - sin), dim=-1),
                torch.stack((sin, sin * shear + cos), dim=-1),
            ),
            dim=1,
        )
        * scale[:, None, None]
    )
    # grid_sample's [−1, 1] units are half the width across and half the height down:
    # in them the pixel-space map is D⁻¹ A D with D = diag(W, H), and a shift of t pixels is
    # 2t/W across and 2t/H down (a no-op for square images).
    aspect = width / height
    forward[:, 0, 1] /= aspect
    forward[:, 1, 0] *= aspect
    shift[:, 1] *= aspect
    inverse = torch.linalg.inv(forward)
    theta = torch.cat((inverse, -(inverse @ shift[..., None])), dim=2)  # (B, 2, 3)
    grid = F.affine_grid(
        theta.to(images.device, images.dtype), list(images.shape), align_corners=False
    )
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    ).clamp(0, 1)
