"""The decoder's range error, and the reconstruction that accounts for it.

A trained decoder does not represent every clean image exactly: even the best code
leaves an error e = u − head(z*(x̂)). Modelling it as white, u = G + e with
e ~ N(0, τ² I) independent of the observation noise, and observing y = m ⊙ (u + σ ε),
the posterior mean of each pixel given the decoded image G is

    û = (τ² y + σ² G) / (τ² + σ²)    where the pixel is observed (m = 1),
    û = G                            where it is missing (m = 0).

For a noise-free observation (σ = 0) this keeps the observed pixels, which is what
inpainting always did; for denoising it mixes a share w = τ²/(τ² + σ²) of the noisy
pixel back in, which lowers the error whenever the decoder's own error is not
negligible against the noise.

τ² (per pixel, on the [0, 1] scale) is a property of the decoder, fitted on *training*
images (:func:`estimate_range_error`): they are observed with noise of σ = 0.2, denoised
with the reconstruction's solver settings, and the share w that minimises the squared
error of û against the clean images has the closed form of a one-dimensional least
squares, w* = ⟨u − G, y − G⟩ / ‖y − G‖², from which τ² = w* σ² / (1 − w*). An effective
τ² fitted this way also absorbs what the white-noise model leaves out (the decoded
image's error is not independent of the noise it was fitted to). It is stored in the
checkpoint's metadata under :data:`RANGE_ERROR_KEY`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from jiio_cli.models import DEQDecoder
from jiio_cli.tasks.inverse.corruption import Corruption, corrupt
from jiio_cli.tasks.inverse.problems import reconstruct_in_batches, reconstruction_settings

__all__ = [
    "FIT_IMAGES",
    "FIT_SIGMA",
    "RANGE_ERROR_KEY",
    "estimate_range_error",
    "fit_range_error",
    "posterior_image",
    "stored_range_error",
]

RANGE_ERROR_KEY = "range_error"
"""Checkpoint metadata key of τ² (a decimal string)."""

FIT_SIGMA = 0.2
"""Noise level of the training observations τ² is fitted on."""

FIT_IMAGES = 200
"""How many training images τ² is fitted on (at most)."""


def posterior_image(
    decoded: Tensor, observed: Tensor, known: Tensor, sigma: float, variance: float
) -> Tensor:
    """The posterior-mean image û of the range-error model (module docstring).

    Args:
        decoded: G, the decoder's image (B, C, H, W) in [0, 1].
        observed: y (B, C, H, W), the observation (any value where missing).
        known: m (B, 1, H, W) or (B, C, H, W), 1 where observed.
        sigma: σ ≥ 0, the observation noise.
        variance: τ² ≥ 0, the decoder's range error; 0 trusts the decoder alone (for
            σ > 0; a noise-free observation is always kept).

    Returns:
        û (B, C, H, W), clamped to [0, 1].
    """
    if sigma < 0 or variance < 0 or not math.isfinite(variance):
        raise ValueError("need sigma >= 0 and a finite range-error variance >= 0")
    share = 1.0 if sigma == 0 else variance / (variance + sigma**2)
    mixed = decoded + share * (observed - decoded)
    return torch.where(known.bool(), mixed, decoded).clamp(0, 1)


def fit_range_error(decoded: Tensor, observed: Tensor, clean: Tensor, sigma: float) -> float:
    """τ² whose posterior share best denoises a set, by one-dimensional least squares.

    Args:
        decoded: G (N, C, H, W), the decoder's images for the noisy observations.
        observed: y (N, C, H, W), clean images plus N(0, σ²) noise, every pixel observed.
        clean: u (N, C, H, W).
        sigma: σ > 0 of the noise.

    Returns:
        τ² = w* σ² / (1 − w*), with w* = ⟨u − G, y − G⟩ / ‖y − G‖² kept in [0, 0.99]
        (0: the noisy pixels do not help, and the decoder's output is used alone).
    """
    if sigma <= 0:
        raise ValueError("fitting the range error needs noisy observations (sigma > 0)")
    step = (observed - decoded).double()
    share = float(((clean - decoded).double() * step).sum() / step.pow(2).sum().clamp_min(1e-30))
    share = min(max(share, 0.0), 0.99)
    return share * sigma**2 / (1 - share)


def estimate_range_error(
    decoder: DEQDecoder,
    clean: Tensor,
    latent_weight: float,
    iterations: int = 300,
    sigma: float = FIT_SIGMA,
    seed: int = 0,
) -> float:
    """Fit τ² of a decoder on clean images (N, C, H, W) (see the module docstring).

    The images are observed with noise σ drawn from a generator seeded by ``seed``, and
    denoised with :func:`~jiio_cli.tasks.inverse.problems.reconstruction_settings` (its defaults:
    α_x 0.06 for 30 iterations then 0.02, Anderson memory 10, x weight 10) for
    ``iterations`` iterations. The shipped decoder's stored τ² was fitted with the
    constant α_x 0.02 that preceded the start phase.
    """
    observed, known = corrupt(clean, Corruption(sigma=sigma), torch.Generator().manual_seed(seed))
    # Only the decoded images are used: μ* is not re-solved at them.
    settings = reconstruction_settings(
        iterations, latent_weight=latent_weight, refine_adjoint=False
    )
    decoded = reconstruct_in_batches(decoder, observed, known, settings)
    return fit_range_error(decoded, observed, clean, sigma)


def stored_range_error(extra: Mapping[str, str]) -> float | None:
    """τ² from a checkpoint's metadata, or None when the checkpoint has none (or it is
    not a non-negative finite number)."""
    text = extra.get(RANGE_ERROR_KEY)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
