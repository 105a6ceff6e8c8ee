"""Generative DEQs and inverse problems: latent inference, training loss, evaluation.

A DEQ decoder maps a latent code x (B, D) to an image through its fixed point,
``image = head(z*)`` with ``z* = f(z*, x)``. There is no encoder: the code of an
observation y with known-pixel mask m is inferred by

    x̂ = argmin_x  ½ ‖m ⊙ (head(z*(x)) − y)‖² + ½ λ ‖x‖²

(the latent penalty λ keeps codes near the origin, where the density of sampling is
fitted), solved by JIIO or by the naive method. Training then follows PAPER.md §4:
for ``generate`` the training loss *is* the inner objective and μ* gives the parameter
gradient with one VJP; for ``denoise`` / ``inpaint`` the loss compares head(z*) with the
clean image and the gradient goes through an adjoint solve warm-started from μ*.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from jiio_cli.engine import (
    InputOptResult,
    InputProblem,
    JIIOConfig,
    NaiveConfig,
    SolverConfig,
    StepSchedule,
    implicit_fixed_point,
    jacobian_penalty,
    jiio_solve_continuing,
    naive_solve,
    optimal_value_surrogate,
)
from jiio_cli.models import DEQDecoder
from jiio_cli.models.precision import Precision, autocast_cell
from jiio_cli.tasks.inverse.defaults import (
    RECONSTRUCTION_ALPHA_X,
    RECONSTRUCTION_MEMORY,
    RECONSTRUCTION_REFINE_ITERATIONS,
    RECONSTRUCTION_START_ALPHA_X,
    RECONSTRUCTION_START_ITERATIONS,
    RECONSTRUCTION_X_WEIGHT,
)

__all__ = [
    "RECONSTRUCTION_STEP_OPTIONS",
    "InferenceConfig",
    "TrainLossResult",
    "infer_latents",
    "reconstruct",
    "reconstruct_in_batches",
    "reconstruction_alpha_x",
    "reconstruction_problem",
    "reconstruction_settings",
    "reconstruction_step_options",
    "trained_latent_weight",
    "training_loss",
]

InverseTask = Literal["generate", "denoise", "inpaint"]


@dataclass(frozen=True)
class InferenceConfig:
    """How latent codes are inferred.

    Attributes:
        method: ``jiio`` or ``naive`` (Adam on the latent, full solves per step).
        latent_weight: λ of the latent penalty.
        jiio: JIIO settings (α_x schedule, Anderson memory, iteration cap, tolerance).
        naive: settings of the naive method.
        precision: arithmetic inside the cell (``fp32``, ``bf16``, ``fp16``); the solver
            state, the adjoint and the latent stay float32 (:mod:`jiio_cli.models.precision`).
        extra_rounds: JIIO only: images whose solve has not converged within the budget
            continue from where they stopped for up to this many more rounds of the same
            budget (:func:`~jiio_cli.engine.continue_unconverged`); 0 for none.
    """

    method: Literal["jiio", "naive"] = "jiio"
    latent_weight: float = 1e-3
    jiio: JIIOConfig = field(
        default_factory=lambda: JIIOConfig(
            alpha_x=StepSchedule(0.05, 0.02),
            solver=SolverConfig(memory=20, max_iter=60, tol=1e-4),
            refine=SolverConfig(memory=5, max_iter=30, tol=1e-4),
        )
    )
    naive: NaiveConfig = field(
        default_factory=lambda: NaiveConfig(
            method="adam",
            steps=50,
            lr=0.1,
            forward=SolverConfig(memory=5, max_iter=30, tol=1e-4),
            adjoint=SolverConfig(memory=5, max_iter=30, tol=1e-4),
        )
    )
    precision: Precision = "fp32"
    extra_rounds: int = 0

    def __post_init__(self) -> None:
        if self.extra_rounds < 0:
            raise ValueError(f"extra_rounds must be >= 0, got {self.extra_rounds}")


def trained_latent_weight(training_config: Mapping[str, Any] | None) -> float:
    """λ of the latent penalty a decoder was trained with, from its checkpoint's training
    config (:class:`InferenceConfig`' default when the run did not record it)."""
    return float((training_config or {}).get("latent_weight", InferenceConfig.latent_weight))


def reconstruction_problem(
    decoder: DEQDecoder,
    observed: Tensor,
    known: Tensor,
    latent_weight: float,
    precision: Precision = "fp32",
    folded: bool = False,
) -> InputProblem:
    """The latent-inference problem for observations (B, C, H, W) with mask (B, 1, H, W).

    With ``precision`` bf16 / fp16 the problem's cell runs under autocast. With
    ``folded`` the cell is :meth:`DEQDecoder.inference_cell` (the same f with the latent
    injection folded into one matrix, cheaper in x, but carrying no gradient to the
    injection's parameters) instead of ``decoder.cell``.
    """
    batch = observed.shape[0]
    observed = observed.detach()
    known = known.detach()

    def objective(z: Tensor, x: Tensor) -> Tensor:
        err = (decoder.head(z) - observed) * known
        return 0.5 * err.pow(2).flatten(1).sum(dim=1) + 0.5 * latent_weight * x.pow(2).sum(dim=1)

    param = next(decoder.parameters())
    z0 = decoder.init_state(batch, device=observed.device, dtype=param.dtype)
    x0 = torch.zeros(batch, decoder.config.latent_dim, device=observed.device, dtype=param.dtype)
    cell = autocast_cell(
        decoder.inference_cell() if folded else decoder.cell, precision, observed.device
    )
    return InputProblem(cell, objective, z0, x0)


def infer_latents(
    decoder: DEQDecoder, observed: Tensor, known: Tensor, settings: InferenceConfig
) -> tuple[InputProblem, InputOptResult]:
    """Infer latent codes by the chosen method (no autograd graph is kept).

    Either method solves on the folded injection (``reconstruction_problem(...,
    folded=True)``: no parameter gradient is taken here). The returned problem has the
    decoder's own cell, so that a training loss built on it reaches every parameter.
    With ``settings.extra_rounds`` the images JIIO has not converged on continue in
    further rounds (:func:`~jiio_cli.engine.continue_unconverged`).
    """
    problem = reconstruction_problem(
        decoder, observed, known, settings.latent_weight, settings.precision, folded=True
    )

    def problem_for(rows: Tensor | None) -> InputProblem:
        if rows is None:
            return problem
        return reconstruction_problem(
            decoder,
            observed[rows],
            known[rows],
            settings.latent_weight,
            settings.precision,
            folded=True,
        )

    with torch.no_grad():
        if settings.method == "jiio":
            result = jiio_solve_continuing(problem_for, settings.jiio, settings.extra_rounds)
        else:
            result = naive_solve(problem, settings.naive)
    cell = autocast_cell(decoder.cell, settings.precision, observed.device)
    return replace(problem, cell=cell), result


@dataclass
class TrainLossResult:
    """A differentiable training loss and the statistics of its inner solve."""

    loss: Tensor
    mse: Tensor
    inner: InputOptResult
    reconstruction: Tensor


def training_loss(
    decoder: DEQDecoder,
    clean: Tensor,
    observed: Tensor,
    known: Tensor,
    task: InverseTask,
    settings: InferenceConfig,
    jacobian_weight: float = 0.0,
    generator: torch.Generator | None = None,
) -> TrainLossResult:
    """One training step's loss for a batch (everything but ``backward``).

    Returns the per-pixel mean loss (so learning rates do not depend on image size),
    plus the Jacobian penalty ‖∂f/∂z‖²_F/dim(z) at the solution times ``jacobian_weight``.
    """
    problem, inner = infer_latents(decoder, observed, known, settings)
    pixels = clean[0].numel()
    if task == "generate" and settings.method == "jiio":
        # The training loss is the inner objective: μ* is already the adjoint.
        per_sample = optimal_value_surrogate(
            problem.cell, problem.objective, inner.z, inner.x, inner.mu
        )
        reconstruction = decoder.head(inner.z)
        loss = per_sample.mean() / pixels
        mse = (reconstruction.detach() - clean).pow(2).mean()
    else:
        adjoint = SolverConfig(memory=5, max_iter=25, tol=1e-4)
        warm = inner.mu if settings.method == "jiio" else None
        z = implicit_fixed_point(problem.cell, inner.z, inner.x, adjoint, warm_start=warm)
        reconstruction = decoder.head(z)
        loss = (reconstruction - clean).pow(2).mean()
        mse = loss.detach()
    if jacobian_weight > 0:
        penalty = jacobian_penalty(problem.cell, inner.z, inner.x, generator=generator)
        loss = loss + jacobian_weight * penalty.mean()
    return TrainLossResult(loss, mse, inner, reconstruction.detach())


def reconstruct(
    decoder: DEQDecoder, observed: Tensor, known: Tensor, settings: InferenceConfig
) -> tuple[Tensor, InputOptResult]:
    """Reconstruct images (B, C, H, W) in [0, 1] from observations at the model's size."""
    _, result = infer_latents(decoder, observed, known, settings)
    with torch.no_grad():
        images = decoder.head(result.z).clamp(0, 1)
    return images, result


def reconstruct_in_batches(
    decoder: DEQDecoder,
    observed: Tensor,
    known: Tensor,
    settings: InferenceConfig,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Reconstructed images (N, C, H, W) of N observations, solved ``batch_size`` at a time.

    ``progress(done, total)`` is called after each batch with the images done so far.
    """
    total = observed.shape[0]
    images = []
    for first in range(0, total, batch_size):
        images.append(
            reconstruct(
                decoder,
                observed[first : first + batch_size],
                known[first : first + batch_size],
                settings,
            )[0]
        )
        if progress is not None:
            progress(min(first + batch_size, total), total)
    return torch.cat(images)


def reconstruction_alpha_x(
    alpha_x: float, alpha_x_start: float | None, start_iterations: int
) -> float | StepSchedule:
    """α_x of a reconstruction: ``alpha_x_start`` for the first ``start_iterations``
    iterations, then ``alpha_x`` (Anderson's history is cleared at the switch, where the
    map changes). A constant ``alpha_x`` when there is no start phase (``alpha_x_start``
    None or equal to ``alpha_x``, or ``start_iterations`` 0).

    Why: far from the solution the latent step can be three times larger than what the
    ill-conditioned last stretch tolerates; on the shipped decoder this start reaches a
    given objective in about a fifth fewer iterations (BENCHMARKS.md).
    """
    if start_iterations < 0:
        raise ValueError(f"start_iterations must be >= 0, got {start_iterations}")
    if alpha_x_start is None or alpha_x_start == alpha_x or start_iterations == 0:
        return alpha_x
    return StepSchedule(alpha_x_start, alpha_x, switch_at=start_iterations)


RECONSTRUCTION_STEP_OPTIONS = ("alpha_x", "alpha_x_start", "start_iterations", "memory", "x_weight")
"""The options of JIIO's latent step that ``jiio reconstruct``, ``jiio bench --task
reconstruct`` and :func:`reconstruction_settings` share, by name."""


def reconstruction_step_options(options: object) -> dict[str, Any]:
    """The :data:`RECONSTRUCTION_STEP_OPTIONS` of ``options`` (any object that has them as
    attributes: the command's validated options, the bench's config) as keyword arguments
    of :func:`reconstruction_settings`, so that each caller passes them on the same way."""
    return {name: getattr(options, name) for name in RECONSTRUCTION_STEP_OPTIONS}


def reconstruction_settings(
    iterations: int,
    latent_weight: float = 1e-3,
    alpha_x: float = RECONSTRUCTION_ALPHA_X,
    memory: int = RECONSTRUCTION_MEMORY,
    x_weight: float = RECONSTRUCTION_X_WEIGHT,
    refine_tol: float = 1e-4,
    graph: bool = False,
    tol: float = 1e-6,
    refine_iterations: int = RECONSTRUCTION_REFINE_ITERATIONS,
    alpha_x_start: float | None = RECONSTRUCTION_START_ALPHA_X,
    start_iterations: int = RECONSTRUCTION_START_ITERATIONS,
    refine_adjoint: bool = True,
    extra_rounds: int = 0,
) -> InferenceConfig:
    """JIIO settings for reconstructing at test time with an iteration budget.

    The defaults are those of ``jiio bench --task reconstruct`` (α_x 0.06 for the first
    30 iterations and 0.02 after, see :func:`reconstruction_alpha_x`; Anderson memory
    10, x weight 10; tolerance 1e-6 so that the budget, not the tolerance, ends the
    loop), with a warm-started refinement of z* and μ* to ``refine_tol`` in at most
    ``refine_iterations`` (:data:`~jiio_cli.tasks.inverse.defaults.
    RECONSTRUCTION_REFINE_ITERATIONS`, which ``jiio reconstruct`` uses too). ``jiio
    reconstruct`` stops at its ``--tol`` instead.

    ``refine_adjoint`` False skips the re-solve of μ* (``JIIOConfig.refine_adjoint``):
    for callers that use only the images or codes and report no convergence. The
    returned x and z* are the same either way.

    ``extra_rounds``: see :class:`InferenceConfig` (``jiio reconstruct`` continues the
    images it has not converged on; the bench does not, it measures fixed budgets).
    """
    return InferenceConfig(
        latent_weight=latent_weight,
        extra_rounds=extra_rounds,
        jiio=JIIOConfig(
            alpha_x=reconstruction_alpha_x(alpha_x, alpha_x_start, start_iterations),
            x_weight=x_weight,
            solver=SolverConfig(memory=memory, max_iter=iterations, tol=tol, graph=graph),
            refine=SolverConfig(memory=5, max_iter=refine_iterations, tol=refine_tol),
            refine_adjoint=refine_adjoint,
        ),
    )
