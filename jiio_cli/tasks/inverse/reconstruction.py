"""Reconstruct users' images with a trained decoder: what ``jiio reconstruct`` writes.

:func:`reconstruct_images` takes images of any size and either greyscale or colour,
with their known-pixel masks, and returns each restored image at its own size and in
its own colours, the solve's statistics per image and, given clean references, the
quality overall and inside the hole. ``jiio reconstruct`` reads the files, checks them,
calls it and writes what it returns, so a Python user gets the very same images.

Per image (C, H, W) with mask m (1, H, W):

1. the observation is brought to the model: converted to its channels (colour → grey as
   the mean of R, G, B) and resized to its size (antialiased bilinear; the mask by
   nearest neighbour);
2. the latent codes of the whole batch are inferred by JIIO (``settings``) and decoded;
3. the decoded image G is resized back to (H, W) and converted to the image's channels
   (grey → the same value in R, G, B);
4. the observed pixels are combined with G by the range-error model
   (:func:`~jiio_cli.tasks.inverse.range_error.posterior_image`): kept exactly where
   known and noise-free, so a colour image keeps its known pixels in colour and only the
   hole comes from the model; mixed in by τ²/(τ² + σ²) when noisy. With neither a hole
   nor noise the result is G itself, the image projected onto the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from jiio_cli.data.channels import convert_channels
from jiio_cli.data.images import resize_image, resize_mask
from jiio_cli.engine import InputOptResult
from jiio_cli.metrics import psnr, ssim
from jiio_cli.models import DEQDecoder
from jiio_cli.tasks.inverse import problems as inverse_problems
from jiio_cli.tasks.inverse.range_error import posterior_image

__all__ = [
    "ImageSolve",
    "RestoredImage",
    "hole_psnr",
    "hole_ssim",
    "reconstruct_images",
    "solve_stats",
]


@dataclass(frozen=True)
class ImageSolve:
    """How the solve of one image ended.

    Attributes:
        objective: the inner objective at the returned code.
        iterations: JIIO iterations actually run for this image (over all rounds).
        residual_z, residual_mu, residual_x: relative residuals of the three blocks.
        tol: the tolerance the residuals are held to.
        converged: every block's residual ≤ ``tol`` (and all finite).
        failed: a NaN/Inf appeared.
    """

    objective: float
    iterations: int
    residual_z: float
    residual_mu: float
    residual_x: float
    tol: float
    converged: bool
    failed: bool

    @property
    def residual(self) -> float:
        """The largest of the three block residuals."""
        return max(self.residual_z, self.residual_mu, self.residual_x)


@dataclass(frozen=True)
class RestoredImage:
    """One restored image, (C, H, W) in [0, 1] at the input's size and channels.

    ``metrics`` holds ``psnr`` and ``ssim`` against the reference, and with a hole
    ``psnr_hole`` and ``ssim_hole`` over the missing pixels only (empty without one).
    """

    image: Tensor
    solve: ImageSolve
    metrics: dict[str, float] = field(default_factory=dict)


def solve_stats(result: InputOptResult, tol: float) -> list[ImageSolve]:
    """Per-image statistics of a batched solve; converged means every block ≤ ``tol``."""
    stats = []
    for i in range(result.objective.shape[0]):
        blocks = (
            float(result.residual_z[i]),
            float(result.residual_mu[i]),
            float(result.residual_x[i]),
        )
        failed = bool(result.failed[i])
        finite = all(b == b and b != float("inf") for b in blocks)
        stats.append(
            ImageSolve(
                objective=float(result.objective[i]),
                iterations=int(result.iterations[i]),
                residual_z=blocks[0],
                residual_mu=blocks[1],
                residual_x=blocks[2],
                tol=tol,
                converged=finite and not failed and max(blocks) <= tol,
                failed=failed,
            )
        )
    return stats


def hole_psnr(image: Tensor, reference: Tensor, hole: Tensor) -> float:
    """PSNR (dB) over the pixels where ``hole`` (1, H, W) is true, images (C, H, W)."""
    mask = hole.expand_as(image)
    mse = (image - reference).pow(2)[mask].mean()
    return float(10.0 * torch.log10(1.0 / mse)) if float(mse) > 0 else float("inf")


def hole_ssim(image: Tensor, reference: Tensor, hole: Tensor) -> float:
    """Mean of the SSIM map (scikit-image, window 7) over the hole's pixels."""
    from skimage.metrics import structural_similarity

    a = image.detach().to("cpu", torch.float64).numpy()
    b = reference.detach().to("cpu", torch.float64).numpy()
    _, full = structural_similarity(a, b, win_size=7, data_range=1.0, channel_axis=0, full=True)
    where = hole.expand_as(image).cpu().numpy()
    return float(full[where].mean())


def _to_model(image: Tensor, known: Tensor, channels: int, size: int) -> tuple[Tensor, Tensor]:
    """An image (C, H, W) and mask (1, H, W) as the model sees them, (c, s, s) and (1, s, s)."""
    converted, _ = convert_channels(image, channels)
    observed = resize_image(converted, size)
    mask = resize_mask(known.bool()[0], size).float()[None]
    return observed * mask, mask


def reconstruct_images(
    decoder: DEQDecoder,
    images: Sequence[Tensor],
    masks: Sequence[Tensor | None],
    settings: inverse_problems.InferenceConfig,
    *,
    sigma: float = 0.0,
    range_error: float = 0.0,
    references: Sequence[Tensor] | None = None,
) -> list[RestoredImage]:
    """Restore images with the decoder, solved as one batch (module docstring).

    Args:
        decoder: the trained decoder (its device is used).
        images: N images (C, H, W) in [0, 1], C = 1 or 3, of any sizes.
        masks: per image a known-pixel mask (1, H, W) or (H, W) (true/1 = known), or None
            for a fully known image.
        settings: how codes are inferred (:func:`~jiio_cli.tasks.inverse.problems.
            reconstruction_settings`); its solver tolerance is what ``converged`` means.
        sigma: noise level σ of the observed pixels on [0, 1].
        range_error: τ², the decoder's range-error variance (see ``posterior_image``).
        references: clean images, one per input and of its shape, to score against.

    Returns:
        One :class:`RestoredImage` per input, in order.
    """
    if len(masks) != len(images):
        raise ValueError(f"need one mask (or None) per image, got {len(masks)} for {len(images)}")
    if references is not None and len(references) != len(images):
        raise ValueError("need one reference per image")
    cfg = decoder.config
    device = next(decoder.parameters()).device
    known_full = []
    for image, mask in zip(images, masks, strict=True):
        if mask is None:
            known_full.append(torch.ones(1, *image.shape[-2:]))
        else:
            known_full.append((mask if mask.dim() == 3 else mask[None]).float().cpu())
    pairs = [
        _to_model(image.cpu(), known, cfg.image_channels, cfg.image_size)
        for image, known in zip(images, known_full, strict=True)
    ]
    observed = torch.stack([p[0] for p in pairs]).to(device)
    known = torch.stack([p[1] for p in pairs]).to(device)
    decoded, result = inverse_problems.reconstruct(decoder, observed, known, settings)
    stats = solve_stats(result, settings.jiio.solver.tol)

    restored = []
    for i, image in enumerate(images):
        channels, height, width = image.shape
        full = resize_image(decoded[i].cpu(), (height, width)).clamp(0, 1)
        full, _ = convert_channels(full, channels)
        has_hole = bool((known_full[i] < 0.5).any())
        if has_hole or sigma > 0:  # without either, the output is the projection itself
            full = posterior_image(
                full[None], image.cpu()[None], known_full[i][None], sigma, range_error
            )[0]
        metrics: dict[str, float] = {}
        if references is not None:
            ref = references[i].cpu()
            metrics["psnr"] = float(psnr(full[None], ref[None])[0])
            metrics["ssim"] = float(ssim(full[None], ref[None])[0])
            if has_hole:
                hole = known_full[i] < 0.5
                metrics["psnr_hole"] = hole_psnr(full, ref, hole)
                metrics["ssim_hole"] = hole_ssim(full, ref, hole)
        restored.append(RestoredImage(full, stats[i], metrics))
    return restored
