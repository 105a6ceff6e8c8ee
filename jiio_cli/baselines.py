"""Classical baselines for the inverse problems: biharmonic inpainting and TV denoising.

They give the learned models something non-trivial to beat. Both wrap scikit-image, an
optional dependency imported only when a baseline runs; without it they raise
:class:`~jiio_cli.errors.JiioError` saying how to install it.

Images are (B, C, H, W) tensors in [0, 1], on any device; each image goes to the CPU as a
(H, W, C) float64 array, is processed with ``channel_axis=-1``, and comes back clipped to
[0, 1] in the input's dtype and device.

* Inpainting solves the biharmonic equation Δ²u = 0 on the missing pixels with the known
  pixels as boundary values (``skimage.restoration.inpaint_biharmonic``).
* Denoising minimises the ROF functional ‖u − f‖²/2 + weight · TV(u) with Chambolle's
  projection algorithm (``skimage.restoration.denoise_tv_chambolle``); larger weights
  smooth more. :func:`tune_tv_weight` picks the weight on training pairs by mean PSNR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from jiio_cli.errors import JiioError
from jiio_cli.metrics import psnr

__all__ = [
    "DEFAULT_TV_WEIGHTS",
    "denoise_tv_batch",
    "inpaint_biharmonic_batch",
    "tune_tv_weight",
]

DEFAULT_TV_WEIGHTS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
"""Grid searched by :func:`tune_tv_weight`: covers light to heavy noise on [0, 1] images."""


def _restoration() -> ModuleType:
    try:
        from skimage import restoration
    except ImportError as exc:
        raise JiioError(
            "scikit-image is needed for the classical baselines: pip install scikit-image"
        ) from exc
    return restoration


def _check_images(images: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")


def _per_image(images: Tensor, process: Callable[[int, np.ndarray], np.ndarray]) -> Tensor:
    """Apply ``process(b, image_hwc)`` to every image and restack as (B, C, H, W)."""
    arrays = images.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    results = [process(b, np.ascontiguousarray(arrays[b])) for b in range(arrays.shape[0])]
    stacked = torch.from_numpy(np.stack(results)).permute(0, 3, 1, 2)
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    return stacked.clamp(0.0, 1.0).to(device=images.device, dtype=out_dtype)


def inpaint_biharmonic_batch(images: Tensor, known_mask: Tensor) -> Tensor:
    """Fill the unknown pixels of each image by biharmonic inpainting.

    Args:
        images: (B, C, H, W) images in [0, 1]; values at unknown pixels are ignored.
        known_mask: (B, 1, H, W) bool, True where the pixel is observed. scikit-image's
            mask means the opposite (True = missing), so it is inverted here.

    Returns:
        (B, C, H, W) inpainted images; known pixels keep their values.
    """
    _check_images(images)
    expected = (images.shape[0], 1, *images.shape[2:])
    if tuple(known_mask.shape) != expected:
        raise ValueError(f"known_mask must have shape {expected}, got {tuple(known_mask.shape)}")
    if known_mask.dtype != torch.bool:
        raise ValueError(f"known_mask must be a bool tensor, got {known_mask.dtype}")
    restoration = _restoration()
    missing = (~known_mask[:, 0]).cpu().numpy()

    def fill(b: int, image: np.ndarray) -> np.ndarray:
        if not missing[b].any():
            return image
        return restoration.inpaint_biharmonic(image, missing[b], channel_axis=-1)

    return _per_image(images, fill)


def denoise_tv_batch(images: Tensor, weight: float) -> Tensor:
    """Denoise each image by total-variation (ROF) regularisation.

    Args:
        images: (B, C, H, W) noisy images, nominally in [0, 1].
        weight: TV weight (> 0); larger values give smoother results.

    Returns:
        (B, C, H, W) denoised images in [0, 1].
    """
    _check_images(images)
    if not weight > 0:
        raise ValueError(f"TV weight must be positive, got {weight}")
    restoration = _restoration()

    def denoise(_: int, image: np.ndarray) -> np.ndarray:
        return restoration.denoise_tv_chambolle(image, weight=weight, channel_axis=-1)

    return _per_image(images, denoise)


def tune_tv_weight(
    noisy: Tensor, clean: Tensor, weights: Sequence[float] = DEFAULT_TV_WEIGHTS
) -> float:
    """The TV weight from ``weights`` whose denoised ``noisy`` has the best mean PSNR.

    Meant for training pairs only, so that the baseline never sees the test split.

    Args:
        noisy: (B, C, H, W) noisy images.
        clean: (B, C, H, W) matching clean images in [0, 1].
        weights: candidate weights; ties go to the earliest.

    Returns:
        The chosen weight, one of ``weights``.
    """
    _check_images(noisy)
    if noisy.shape != clean.shape:
        raise ValueError(
            f"noisy and clean differ in shape: {tuple(noisy.shape)} vs {tuple(clean.shape)}"
        )
    if len(weights) == 0:
        raise ValueError("tune_tv_weight needs at least one candidate weight")
    best_weight, best_score = float(weights[0]), -float("inf")
    for weight in weights:
        score = float(psnr(denoise_tv_batch(noisy, weight), clean).mean())
        if score > best_score:
            best_weight, best_score = float(weight), score
    return best_weight
