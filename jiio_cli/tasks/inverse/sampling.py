"""Generating images from a trained DEQ decoder.

A decoder trained with inferred latents has no prior of its own. After training, the
codes of (clean) training images are inferred by JIIO and a Gaussian mixture is fitted
to them; sampling draws codes from that mixture and decodes them (a forward DEQ solve
and the image head). The mixture is stored in the checkpoint under ``density.``, and
beside it, in the metadata, the decoder's range error τ² fitted on some of the same
training images (:mod:`jiio_cli.tasks.inverse.range_error`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from jiio_cli.checkpoint import (
    MODEL_PREFIX,
    Checkpoint,
    load_checkpoint,
    save_checkpoint_like,
)
from jiio_cli.density import GaussianMixture, fit_gmm
from jiio_cli.engine import JIIOConfig, SolverConfig, forward_solve
from jiio_cli.errors import JiioError
from jiio_cli.models import DEQDecoder
from jiio_cli.tasks.inverse.problems import InferenceConfig, infer_latents, trained_latent_weight
from jiio_cli.tasks.inverse.range_error import FIT_IMAGES, RANGE_ERROR_KEY, estimate_range_error
from jiio_cli.tasks.loading import load_decoder

__all__ = [
    "DENSITY_PREFIX",
    "SampledImages",
    "attach_density",
    "attach_density_to_checkpoints",
    "decode",
    "infer_codes",
    "sample_images",
]

DENSITY_PREFIX = "density."


def infer_codes(
    decoder: DEQDecoder, images: Tensor, settings: InferenceConfig, batch_size: int = 128
) -> Tensor:
    """Latent codes (N, D) of clean images (N, C, H, W), inferred from all pixels."""
    codes = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        known = torch.ones_like(batch[:, :1])
        _, result = infer_latents(decoder, batch, known, settings)
        codes.append(result.x)
    return torch.cat(codes)


def decode(decoder: DEQDecoder, codes: Tensor, solver: SolverConfig | None = None) -> Tensor:
    """Images (N, C, H, W) in [0, 1] for latent codes (N, D): head(z*) with z* = f(z*, x).

    Raises:
        JiioError: the forward solve diverged (NaN/Inf) for some code; the solver would
            otherwise hand back its last finite iterate, an image of nothing.
    """
    solver = solver or SolverConfig(memory=5, max_iter=60, tol=1e-4)
    param = next(decoder.parameters())
    codes = codes.to(param.device, param.dtype)
    z0 = decoder.init_state(codes.shape[0], device=param.device, dtype=param.dtype)
    with torch.no_grad():
        solution = forward_solve(decoder.cell, codes, z0, solver)
        images = decoder.head(solution.z)
        failed = solution.stats.failed | ~torch.isfinite(images).flatten(1).all(dim=1)
        if bool(failed.any()):
            raise JiioError(
                f"the decoder's forward solve diverged: NaN/Inf for {int(failed.sum())} of "
                f"{codes.shape[0]} samples; the checkpoint is broken or the solve unstable"
            )
        return images.clamp(0, 1)


@dataclass(frozen=True)
class SampledImages:
    """New images drawn from a decoder: ``images`` (N, C, H, W) in [0, 1], decoded from
    codes drawn from the mixture of ``components`` Gaussians stored in the checkpoint."""

    images: Tensor
    components: int


def sample_images(path: Path, n: int, seed: int, device: torch.device) -> SampledImages:
    """Draw ``n`` latent codes from the checkpoint's fitted Gaussian mixture (a generator
    seeded with ``seed``, on the CPU so that draws do not depend on the device) and decode
    them on ``device``.

    Raises:
        JiioError: the checkpoint holds no latent density, or an invalid one, or the
            decoder's forward solve diverged.
    """
    decoder, _ = load_decoder(path, device)
    tensors = load_checkpoint(path).tensors
    if not any(k.startswith(DENSITY_PREFIX) for k in tensors):
        raise JiioError(
            f"checkpoint {path} holds no latent density; fit one with "
            "scripts/fit_density.py or train with jiio train"
        )
    try:
        mixture = GaussianMixture.from_tensors(tensors, DENSITY_PREFIX)
    except ValueError as exc:
        raise JiioError(f"checkpoint {path} has an invalid latent density: {exc}") from None
    codes = mixture.sample(n, generator=torch.Generator().manual_seed(seed))
    return SampledImages(images=decode(decoder, codes), components=mixture.components)


def attach_density(
    path: Path,
    images: Tensor,
    device: torch.device,
    components: int = 10,
    iterations: int = 150,
) -> GaussianMixture:
    """Fit the latent mixture of a decoder checkpoint on ``images`` and store it there.

    The checkpoint is rewritten atomically with the mixture under ``density.`` and the
    decoder's range error τ², fitted on the first :data:`FIT_IMAGES` of ``images``
    (:func:`~jiio_cli.tasks.inverse.range_error.estimate_range_error`), in its metadata.
    """
    decoder, ckpt = load_decoder(path, device)
    mixture, variance = _fit_density(decoder, ckpt, images, device, components, iterations)
    _store_density(path, ckpt, mixture, variance)
    return mixture


def attach_density_to_checkpoints(
    paths: Sequence[Path],
    images: Tensor,
    device: torch.device,
    components: int = 10,
    iterations: int = 150,
) -> int:
    """:func:`attach_density` for each of ``paths``, fitting once per distinct decoder.

    The fit is a function of the decoder's weights, its trained latent weight and
    ``images`` alone (the mixture's initialisation is seeded), so checkpoints that hold
    the same decoder (``-last`` and ``-best`` of a run whose last epoch was its best)
    share one fit instead of repeating it. Returns the number of fits.
    """
    fits: list[tuple[Checkpoint, GaussianMixture, float]] = []
    for path in paths:
        decoder, ckpt = load_decoder(path, device)
        same = next((fit for fit in fits if _same_decoder(fit[0], ckpt)), None)
        if same is None:
            mixture, variance = _fit_density(decoder, ckpt, images, device, components, iterations)
            same = (ckpt, mixture, variance)
            fits.append(same)
        _store_density(path, ckpt, same[1], same[2])
    return len(fits)


def _same_decoder(a: Checkpoint, b: Checkpoint) -> bool:
    """Whether two decoder checkpoints hold the same model: equal ``model.`` tensors and
    the same trained latent weight (the two things a density fit reads)."""
    if trained_latent_weight(a.training_config) != trained_latent_weight(b.training_config):
        return False
    keys = {k for k in a.tensors if k.startswith(MODEL_PREFIX)}
    if keys != {k for k in b.tensors if k.startswith(MODEL_PREFIX)}:
        return False
    return all(torch.equal(a.tensors[k], b.tensors[k]) for k in keys)


def _fit_density(
    decoder: DEQDecoder,
    ckpt: Checkpoint,
    images: Tensor,
    device: torch.device,
    components: int,
    iterations: int,
) -> tuple[GaussianMixture, float]:
    """The mixture of the codes of ``images`` (N, C, H, W) inferred by JIIO, and the
    decoder's range error τ² on the first :data:`FIT_IMAGES` of them."""
    latent_weight = trained_latent_weight(ckpt.training_config)
    settings = InferenceConfig(
        latent_weight=latent_weight,
        # Only the codes are used: μ* is not re-solved at them.
        jiio=JIIOConfig(
            alpha_x=0.02,
            solver=SolverConfig(memory=20, max_iter=iterations),
            refine_adjoint=False,
        ),
    )
    components = min(components, images.shape[0])
    images = images.to(device)
    codes = infer_codes(decoder, images, settings)
    mixture = fit_gmm(
        codes.double(),
        components=components,
        generator=torch.Generator().manual_seed(0),
        restarts=2,
    )
    variance = estimate_range_error(decoder, images[:FIT_IMAGES], latent_weight)
    return mixture, variance


def _store_density(path: Path, ckpt: Checkpoint, mixture: GaussianMixture, variance: float) -> None:
    """Rewrite the checkpoint ``ckpt`` read from ``path`` atomically with ``mixture`` under
    ``density.`` (replacing any earlier one) and τ² in its metadata."""
    tensors = {k: v for k, v in ckpt.tensors.items() if not k.startswith(DENSITY_PREFIX)}
    tensors.update(mixture.to_tensors(DENSITY_PREFIX))
    save_checkpoint_like(path, ckpt, tensors, extra={**ckpt.extra, RANGE_ERROR_KEY: repr(variance)})
