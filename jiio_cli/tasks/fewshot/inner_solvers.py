"""The inner (support-set) solvers of a meta-training run, built from its spec.

The glyph (:mod:`jiio_cli.tasks.fewshot.training`) and sinusoid
(:mod:`jiio_cli.tasks.fewshot.sinusoid_training`) runs expose the same inner-solve options
(``inner_iters``, ``inner_memory``, ``alpha_x``, ``alpha_x_final``, ``naive_steps``,
``naive_lr``) and turn them into the engine's JIIO and naive-loop settings the same way;
each task then wraps them in its own adaptation settings with its own penalty
(:func:`task_adapt_settings`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from jiio_cli.engine import JIIOConfig, NaiveConfig, SolverConfig, StepSchedule

__all__ = [
    "InnerSolveConfig",
    "inner_solvers",
    "jiio_inner_settings",
    "naive_inner_settings",
    "task_adapt_settings",
]

AdaptSettings = TypeVar("AdaptSettings")


class InnerSolveConfig(Protocol):
    """The inner-solve options of a meta-training spec (read-only, as on a frozen dataclass).

    Attributes:
        inner: the run's inner method, ``jiio`` or ``naive``.
        inner_iters, inner_memory: JIIO's iteration budget and Anderson memory.
        alpha_x, alpha_x_final: JIIO's x step size, first and final.
        naive_steps, naive_lr: the naive loop's Adam steps and learning rate.
    """

    @property
    def inner(self) -> str: ...
    @property
    def inner_iters(self) -> int: ...
    @property
    def inner_memory(self) -> int: ...
    @property
    def alpha_x(self) -> float: ...
    @property
    def alpha_x_final(self) -> float: ...
    @property
    def naive_steps(self) -> int: ...
    @property
    def naive_lr(self) -> float: ...


# JIIO's refinement and the naive loop's forward and adjoint solves share one solver.
_INNER_SOLVE = SolverConfig(memory=5, max_iter=30, tol=1e-4)


def jiio_inner_settings(
    alpha_x: float, alpha_x_final: float, memory: int, iterations: int
) -> JIIOConfig:
    """JIIO on the support set: x step size ``alpha_x`` decaying to ``alpha_x_final``,
    Anderson ``memory``, ``iterations`` and tolerance 10⁻⁴, then a refinement solve
    (memory 5, 30 iterations, tolerance 10⁻⁴)."""
    return JIIOConfig(
        alpha_x=StepSchedule(alpha_x, alpha_x_final),
        solver=SolverConfig(memory=memory, max_iter=iterations, tol=1e-4),
        refine=_INNER_SOLVE,
    )


def naive_inner_settings(steps: int, lr: float) -> NaiveConfig:
    """The naive loop: ``steps`` Adam steps of learning rate ``lr`` on the context, each
    with a forward and an adjoint solve (memory 5, 30 iterations, tolerance 10⁻⁴)."""
    return NaiveConfig(
        method="adam", steps=steps, lr=lr, forward=_INNER_SOLVE, adjoint=_INNER_SOLVE
    )


def inner_solvers(
    spec: InnerSolveConfig, iterations: int | None = None
) -> tuple[JIIOConfig, NaiveConfig]:
    """JIIO's and the naive loop's settings for a run (``iterations`` overrides JIIO's budget)."""
    jiio = jiio_inner_settings(
        spec.alpha_x, spec.alpha_x_final, spec.inner_memory, iterations or spec.inner_iters
    )
    return jiio, naive_inner_settings(spec.naive_steps, spec.naive_lr)


def task_adapt_settings(
    spec: InnerSolveConfig,
    build: Callable[..., AdaptSettings],
    iterations: int | None = None,
    method: str | None = None,
    **penalty: float,
) -> AdaptSettings:
    """A task's adaptation settings around a run's inner solvers:
    ``build(method=..., jiio=..., naive=..., **penalty)`` with the method ``method`` (default:
    the run's ``inner``) and :func:`inner_solvers` (``iterations`` overrides JIIO's budget);
    the query (and adjoint) solvers keep the task's defaults."""
    jiio, naive = inner_solvers(spec, iterations)
    return build(method=method or spec.inner, jiio=jiio, naive=naive, **penalty)
