"""Image quality metrics for batches of images: PSNR and SSIM.

Both take two batches ``x`` and ``y`` of shape (B, C, H, W) with values in
``[0, data_range]`` (``[0, 1]`` by default) and return one score per image, shape (B,).

PSNR
    ``10 · log10(data_range² / MSE)`` with the MSE taken over all C·H·W values of an image.
    Identical images have MSE 0 and score ``+inf``; callers averaging PSNR over a set must
    decide how to treat that (it is a perfect reconstruction, not an error). It stays in
    torch, a few lines: training scores every held-out batch with it on the device.

SSIM
    The structural similarity of Wang et al. (2004) as scikit-image's
    ``structural_similarity`` computes it with its defaults (7×7 uniform window,
    sample-covariance correction, K1 = 0.01, K2 = 0.03), averaged over channels with
    ``channel_axis``. It is computed on the host in float64, one image at a time: it scores
    finished reconstructions against references, never inside a solver loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SSIM_WINDOW", "psnr", "ssim"]

SSIM_WINDOW = 7
"""Side of the uniform SSIM window (scikit-image's default ``win_size``)."""


def _check_pair(x: Tensor, y: Tensor, data_range: float) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")


def _work_dtype(device: torch.device) -> torch.dtype:
    # The MSE of images that differ little sums many tiny squares: float64 keeps every digit;
    # MPS has no float64, so it is the one device that stays in float32.
    return torch.float32 if device.type == "mps" else torch.float64


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    Args:
        x, y: (B, C, H, W) images with values in ``[0, data_range]``.
        data_range: the span of possible values (1.0 for images in [0, 1]).

    Returns:
        (B,) tensor ``10 · log10(data_range² / MSE_b)`` in the floating dtype of ``x``
        (float32 for integer input). Identical images give ``+inf``.
    """
    _check_pair(x, y, data_range)
    work = _work_dtype(x.device)
    diff = x.to(work) - y.to(work)
    mse = diff.pow(2).flatten(1).mean(dim=1)
    # mse == 0 divides to +inf, and log10(+inf) = +inf: the documented perfect score.
    score = 10.0 * torch.log10(data_range**2 / mse)
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    return score.to(out_dtype)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean structural similarity per image (scikit-image's ``structural_similarity``).

    Args:
        x, y: (B, C, H, W) images with values in ``[0, data_range]``; H and W must be at
            least 7 (the window side).
        data_range: the span of possible values (1.0 for images in [0, 1]).

    Returns:
        (B,) tensor of mean SSIM on the device of ``x``, in its floating dtype (float32
        for integer input); 1 for identical images.
    """
    _check_pair(x, y, data_range)
    height, width = x.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, "
            f"got {height}×{width}"
        )
    # Imported here: scikit-image takes a moment to import and most commands never score.
    from skimage.metrics import structural_similarity

    xs = x.detach().to("cpu", torch.float64).numpy()
    ys = y.detach().to("cpu", torch.float64).numpy()
    scores = [
        structural_similarity(a, b, win_size=SSIM_WINDOW, data_range=data_range, channel_axis=0)
        for a, b in zip(xs, ys, strict=True)
    ]
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    return torch.tensor(scores, dtype=torch.float64).to(device=x.device, dtype=out_dtype)
