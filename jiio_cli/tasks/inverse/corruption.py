"""Observation models for inverse problems: noise, box holes and missing pixels.

An observation of a clean image u (B, C, H, W) in [0, 1] is

    y = m ⊙ (u + σ ε),    ε ~ N(0, I),

with m (B, 1, H, W) the known-pixel mask (1 = observed). The reconstruction objective
only looks at observed pixels, so missing pixels of y are set to 0 and never used.
All randomness comes from an explicit generator, so a training run is reproducible
batch by batch (what makes ``--resume`` exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Corruption", "corrupt"]


@dataclass(frozen=True)
class Corruption:
    """How observations are made.

    Attributes:
        sigma: noise standard deviation on the [0, 1] scale; a (low, high) pair draws
            σ uniformly per image (blind denoising).
        hole_size: side of a square hole at a uniformly random position (0: none).
        mask_ratio: fraction of pixels missing uniformly at random (0: none).
    """

    sigma: float | tuple[float, float] = 0.0
    hole_size: int = 0
    mask_ratio: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.sigma_range
        if not 0 <= low <= high:
            raise ValueError(f"noise level must satisfy 0 <= low <= high, got {self.sigma}")
        if self.hole_size < 0 or not 0 <= self.mask_ratio < 1:
            raise ValueError("need hole_size >= 0 and 0 <= mask_ratio < 1")

    @property
    def sigma_range(self) -> tuple[float, float]:
        s = self.sigma
        return (float(s[0]), float(s[1])) if isinstance(s, tuple) else (float(s), float(s))

    @property
    def is_identity(self) -> bool:
        return self.sigma_range == (0.0, 0.0) and self.hole_size == 0 and self.mask_ratio == 0


def corrupt(
    clean: Tensor, corruption: Corruption, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Observe a batch of clean images.

    Args:
        clean: (B, C, H, W) in [0, 1].
        corruption: the observation model.
        generator: CPU generator for all random draws (results are moved to clean's device).

    Returns:
        (observed (B, C, H, W), known (B, 1, H, W) float mask of observed pixels).
    """
    b, c, h, w = clean.shape
    known = torch.ones(b, 1, h, w)
    if corruption.hole_size > 0:
        side = min(corruption.hole_size, h, w)
        top = torch.randint(0, h - side + 1, (b,), generator=generator)
        left = torch.randint(0, w - side + 1, (b,), generator=generator)
        rows = torch.arange(h)[None, :, None]
        cols = torch.arange(w)[None, None, :]
        hole = (
            (rows >= top[:, None, None])
            & (rows < (top + side)[:, None, None])
            & (cols >= left[:, None, None])
            & (cols < (left + side)[:, None, None])
        )
        known = known * (~hole).unsqueeze(1).float()
    if corruption.mask_ratio > 0:
        keep = torch.rand(b, 1, h, w, generator=generator) >= corruption.mask_ratio
        known = known * keep.float()
    low, high = corruption.sigma_range
    sigma = low + (high - low) * torch.rand(b, 1, 1, 1, generator=generator)
    noise = torch.randn(b, c, h, w, generator=generator) * sigma
    known = known.to(clean.device, clean.dtype)
    observed = (clean + noise.to(clean.device, clean.dtype)) * known
    return observed, known
