"""JIIO against the naive method and classical baselines on reconstruction.

Two measurements, both on the MNIST-5k held-out split and the given decoder:

* **Time to equal objective.** On one batch, the naive method (Adam on the latent code,
  each step a full forward and adjoint solve from scratch, to the tolerance ``inner_tol``
  within a cap of ``inner_max_iter`` iterations) runs ``naive_steps`` steps; its
  objective trace is exact (z is solved at every x). JIIO is run from scratch with doubling
  iteration budgets, then bisected between the last budget that missed the naive final
  objective and the first that reached it (:mod:`jiio_cli.bench.budget_search`); each
  run's objective is measured at its returned, refined point. The ratio is the naive
  method's time to reach its own final objective over the time of the smallest JIIO
  budget that reaches the same objective.
* **Quality.** PSNR against the clean digits for the corrupted input ("no learning"), a
  classical baseline from scikit-image and JIIO with the decoder, per corruption; PSNR
  of the mean squared error over the whole set (see :func:`dataset_psnr`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jiio_cli.bench.budget_search import jiio_time_to_target
from jiio_cli.bench.timing import timed_median
from jiio_cli.data import load_mnist5k
from jiio_cli.engine import (
    InputOptResult,
    NaiveConfig,
    SolverConfig,
    inner_solves_converged,
)
from jiio_cli.errors import JiioError
from jiio_cli.models import DEQDecoder
from jiio_cli.tasks.inverse.corruption import Corruption, corrupt
from jiio_cli.tasks.inverse.defaults import (
    RECONSTRUCTION_ALPHA_X,
    RECONSTRUCTION_MEMORY,
    RECONSTRUCTION_START_ALPHA_X,
    RECONSTRUCTION_START_ITERATIONS,
    RECONSTRUCTION_X_WEIGHT,
)
from jiio_cli.tasks.inverse.problems import (
    InferenceConfig,
    reconstruct,
    reconstruct_in_batches,
    reconstruction_settings,
    reconstruction_step_options,
)
from jiio_cli.tasks.inverse.range_error import posterior_image
from jiio_cli.training import derived_generator

ProgressFn = Callable[[str, int, "int | None"], None]
"""``progress(label, done, total)``: how far a phase of the bench is."""

RowFn = Callable[[dict[str, Any]], None]
"""Called with each finished method's row (method, seconds, objective, f_evals)."""

__all__ = [
    "CORRUPTIONS",
    "ReconstructBenchConfig",
    "dataset_psnr",
    "jiio_settings",
    "quality_observations",
    "quality_table",
    "speed_batch",
    "speed_observations",
    "time_to_equal_objective",
]

CORRUPTIONS = {
    "inpaint": Corruption(hole_size=10),
    "denoise": Corruption(sigma=0.2),
}


@dataclass(frozen=True)
class ReconstructBenchConfig:
    """Settings of the reconstruction benchmark.

    ``inner_tol`` and ``inner_max_iter`` bound every forward and adjoint solve of the
    naive method and JIIO's final refinement alike. The cap of 100 lets the naive
    method's solves reach their tolerance: the method as PAPER.md and the issue define
    it, each step a full solve. A lower cap truncates them (at 30, most solves of the
    shipped decoder stop above 1e-4; BENCHMARKS.md measures the ratio against both).
    """

    batch_size: int = 64
    naive_steps: int = 50
    naive_lr: float = 0.1
    jiio_budgets: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640)
    alpha_x: float = RECONSTRUCTION_ALPHA_X
    alpha_x_start: float | None = RECONSTRUCTION_START_ALPHA_X
    start_iterations: int = RECONSTRUCTION_START_ITERATIONS
    memory: int = RECONSTRUCTION_MEMORY
    x_weight: float = RECONSTRUCTION_X_WEIGHT
    latent_weight: float = 1e-3
    inner_tol: float = 1e-4
    inner_max_iter: int = 100
    repeat: int = 1
    graph: bool = False
    refine: int = 3


def jiio_settings(
    cfg: ReconstructBenchConfig, iterations: int, refine_adjoint: bool = True
) -> InferenceConfig:
    """The bench's JIIO inference settings with an iteration budget (``refine_adjoint``:
    see :func:`~jiio_cli.tasks.inverse.problems.reconstruction_settings`)."""
    return reconstruction_settings(
        iterations,
        latent_weight=cfg.latent_weight,
        refine_tol=cfg.inner_tol,
        refine_iterations=cfg.inner_max_iter,
        graph=cfg.graph,
        refine_adjoint=refine_adjoint,
        **reconstruction_step_options(cfg),
    )


def _naive_run(
    decoder: DEQDecoder, observed: Tensor, known: Tensor, cfg: ReconstructBenchConfig
) -> tuple[InputOptResult, float]:
    """The naive method's run on the batch (Adam, full solves) and its median seconds."""
    inner = SolverConfig(memory=5, max_iter=cfg.inner_max_iter, tol=cfg.inner_tol)
    naive_settings = InferenceConfig(
        method="naive",
        latent_weight=cfg.latent_weight,
        naive=NaiveConfig(
            method="adam", steps=cfg.naive_steps, lr=cfg.naive_lr, forward=inner, adjoint=inner
        ),
    )
    (_, naive), seconds = timed_median(
        lambda: reconstruct(decoder, observed, known, naive_settings), observed.device, cfg.repeat
    )
    if not math.isfinite(float(naive.trace[-1])) or bool(naive.failed.any()):
        raise JiioError(
            "the decoder's solves diverged (NaN/Inf) in the naive method; the checkpoint "
            "is broken or the solve unstable: nothing to compare"
        )
    return naive, seconds


def time_to_equal_objective(
    decoder: DEQDecoder,
    observed: Tensor,
    known: Tensor,
    cfg: ReconstructBenchConfig,
    progress: ProgressFn | None = None,
    on_row: RowFn | None = None,
) -> dict[str, Any]:
    """Objective-versus-time of both methods on one batch, and the speed ratio.

    ``progress`` hears each phase (the naive run, then the JIIO budgets: at most
    ``len(cfg.jiio_budgets) + cfg.refine`` runs); ``on_row`` gets each method's row as
    soon as it is measured, so that an interrupted bench can still show them.
    """
    report: ProgressFn = progress if progress is not None else (lambda _l, _d, _t: None)
    naive_label = "naive (Adam, full solves)"
    # Warm-up so that neither method pays one-off costs (allocator, kernels).
    reconstruct(decoder, observed[:2], known[:2], jiio_settings(cfg, 3))
    report(naive_label, 0, 1)
    naive, naive_seconds = _naive_run(decoder, observed, known, cfg)
    trace = naive.trace.cpu()
    # Steps cost the same (solves from scratch), so step k ends at (k+1)/(steps+1) of the time.
    naive_times = [naive_seconds * (k + 1) / len(trace) for k in range(len(trace))]
    target = float(trace[-1])
    naive_reach = next(t for t, v in zip(naive_times, trace.tolist(), strict=True) if v <= target)
    report(naive_label, 1, 1)
    if on_row is not None:
        row = {"method": naive_label, "seconds": naive_reach, "objective": target}
        on_row({**row, "f_evals": int(naive.batch_f_evals)})

    def jiio_run(budget: int) -> dict[str, Any]:
        (_, result), seconds = timed_median(
            lambda: reconstruct(decoder, observed, known, jiio_settings(cfg, budget)),
            observed.device,
            cfg.repeat,
        )
        return {
            "iterations": budget,
            "seconds": seconds,
            "objective": float(result.objective.mean()),
            "f_evals": int(result.batch_f_evals),
            "cuda_graph": result.graph,
        }

    jiio = jiio_time_to_target(
        jiio_run, "objective", target, cfg.jiio_budgets, cfg.refine, report, on_row
    )
    jiio_reach = jiio["seconds_to_target"]
    return {
        "batch_size": observed.shape[0],
        "target_objective": target,
        "naive": {
            "method": f"adam, {cfg.naive_steps} steps, full forward and adjoint solves",
            "seconds": naive_seconds,
            "seconds_to_target": naive_reach,
            "f_evals": int(naive.batch_f_evals),
            "inner_tol": cfg.inner_tol,
            "inner_max_iter": cfg.inner_max_iter,
            "inner_solves_converged": inner_solves_converged(naive),
            "final_objective": target,
            "trace": [
                {"seconds": t, "objective": float(v)}
                for t, v in zip(naive_times, trace.tolist(), strict=True)
            ],
        },
        "jiio": jiio,
        "ratio": (naive_reach / jiio_reach) if jiio_reach else None,
    }


def speed_batch(
    batch_size: int, corruption: str = "inpaint", seed: int = 0, offset: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """The bench's batch (clean, observed, known): held-out MNIST-5k digits ``offset`` to
    ``offset + batch_size`` (1, 28, 28 each), corrupted by :func:`speed_observations`.
    On the CPU; ``jiio bench --task reconstruct`` and the study scripts share it."""
    clean = load_mnist5k("heldout")[0][offset : offset + batch_size]
    observed, known = speed_observations(clean, corruption, seed)
    return clean, observed, known


def speed_observations(
    clean: Tensor, corruption: str = "inpaint", seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The corrupted batch (observed, known) of the time-to-equal-objective comparison.

    ``clean`` is the bench's batch, the first held-out digits (B, 1, 28, 28); one fixed
    random stream per seed, so scripts that study the bench's problem draw the same
    corruption as ``jiio bench --task reconstruct``.
    """
    return corrupt(clean, CORRUPTIONS[corruption], derived_generator(seed, 5))


def quality_observations(clean: Tensor, corruption: Corruption, seed: int) -> tuple[Tensor, Tensor]:
    """The corrupted held-out images (observed, known) that :func:`quality_table` scores.

    One fixed random stream per seed, so a script can reproduce the table's draws.
    """
    return corrupt(clean, corruption, derived_generator(seed, 4))


def quality_table(
    decoder: DEQDecoder,
    clean: Tensor,
    kind: str,
    cfg: ReconstructBenchConfig,
    iterations: int,
    tv_weight: float | None,
    seed: int,
    range_error: float = 0.0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """PSNR (dB) of no learning, the classical baseline and JIIO for one corruption.

    ``progress`` hears the images reconstructed so far (label ``quality: <kind>``).

    The JIIO row is the posterior-mean image of the range-error model with τ² =
    ``range_error`` (:func:`~jiio_cli.tasks.inverse.range_error.posterior_image`: observed pixels
    kept for the noise-free hole, the noisy ones mixed in by τ²/(τ² + σ²) for
    denoising); a second row scores the decoder's output G alone.
    """
    from jiio_cli.baselines import denoise_tv_batch, inpaint_biharmonic_batch

    corruption = CORRUPTIONS[kind]
    observed, known = quality_observations(clean, corruption, seed)
    # Only the images are scored: μ* is not re-solved (x and z* are the same either way).
    settings = jiio_settings(cfg, iterations, refine_adjoint=False)
    label = f"quality: {kind}"

    def batch_done(done: int, total: int) -> None:
        if progress is not None:
            progress(label, done, total)

    batch_done(0, observed.shape[0])
    decoded = reconstruct_in_batches(
        decoder, observed, known, settings, cfg.batch_size, progress=batch_done
    )
    sigma = corruption.sigma_range[0]
    jiio_images = posterior_image(decoded, observed, known, sigma, range_error)
    if kind == "inpaint":
        classical = inpaint_biharmonic_batch(observed.cpu(), known.bool().cpu()).to(clean.device)
        classical_name = "skimage inpaint_biharmonic"
    else:
        assert tv_weight is not None
        classical = denoise_tv_batch(observed.cpu(), tv_weight).to(clean.device)
        classical_name = f"skimage denoise_tv_chambolle (weight {tv_weight:g})"
    rows = {
        "no learning (corrupted input)": observed.clamp(0, 1),
        classical_name: classical,
        "jiio (DEQ decoder)": jiio_images,
        "jiio, decoder output only": decoded,
    }
    # PSNR of the mean squared error over the set: a hole on blank background leaves an
    # image unchanged (per-image PSNR = ∞), which would make a mean of PSNRs meaningless.
    return {name: dataset_psnr(img, clean) for name, img in rows.items()}


def dataset_psnr(images: Tensor, clean: Tensor) -> float:
    """10·log10(1 / mean MSE) over a set of [0, 1] images (B, C, H, W)."""
    mse = (images.float() - clean.float()).pow(2).mean()
    return float(10 * torch.log10(1 / mse.clamp_min(1e-12)))
