"""Image quality metrics for batches of images: PSNR and SSIM.

Both take two batches ``x`` and ``y`` of shape (B, C, H, W) with values in
``[0, data_range]`` (``[0, 1]`` by default) and return one score per image, shape (B,).
Neither is differentiated through in the toolkit, but both are plain torch code and work
on any device.

PSNR
    ``10 · log10(data_range² / MSE)`` with the MSE taken over all C·H·W values of an image.
    Identical images have MSE 0 and score ``+inf``; callers averaging PSNR over a set must
    decide how to treat that (it is a perfect reconstruction, not an error).

SSIM
    The structural similarity of Wang et al. (2004) exactly as scikit-image's
    ``structural_similarity`` computes it with its defaults: local means, variances and
    covariance over a 7×7 uniform window, with sample-covariance correction N/(N−1),
    N = 49, and

        S = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
        C1 = (0.01 · data_range)², C2 = (0.03 · data_range)².

    The map S is averaged over the region whose windows lie fully inside the image
    (scikit-image filters with reflection and then crops (7 − 1)//2 = 3 pixels from each
    border, which leaves exactly those pixels), and then over channels, as scikit-image
    does with ``channel_axis``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_WINDOW", "psnr", "ssim"]

SSIM_WINDOW = 7
"""Side of the uniform SSIM window (scikit-image's default ``win_size``)."""

SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(x: Tensor, y: Tensor, data_range: float) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")


def _work_dtype(device: torch.device) -> torch.dtype:
    # Local variances are differences of window averages (E[x²] − E[x]²), which cancel
    # badly in float32; MPS has no float64, so it is the one device that stays in float32.
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
    """Mean structural similarity per image, matching scikit-image's defaults.

    Args:
        x, y: (B, C, H, W) images with values in ``[0, data_range]``; H and W must be at
            least 7 (the window side).
        data_range: the span of possible values (1.0 for images in [0, 1]).

    Returns:
        (B,) tensor of mean SSIM in the floating dtype of ``x`` (float32 for integer
        input); 1 for identical images.
    """
    _check_pair(x, y, data_range)
    height, width = x.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, "
            f"got {height}×{width}"
        )
    work = _work_dtype(x.device)
    batch, channels = x.shape[:2]
    # Channels become batch entries so one pooling call filters every channel separately.
    xs = x.to(work).reshape(batch * channels, 1, height, width)
    ys = y.to(work).reshape(batch * channels, 1, height, width)

    # Unpadded pooling yields only the windows fully inside the image: the same pixels
    # scikit-image keeps after cropping (win − 1)//2 from each border.
    stacked = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=1)
    means = F.avg_pool2d(stacked, kernel_size=SSIM_WINDOW, stride=1)
    ux, uy, uxx, uyy, uxy = means.unbind(dim=1)

    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    numerator = (2 * ux * uy + c1) * (2 * vxy + c2)
    denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    per_channel = (numerator / denominator).flatten(1).mean(dim=1)
    score = per_channel.reshape(batch, channels).mean(dim=1)
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    return score.to(out_dtype)
