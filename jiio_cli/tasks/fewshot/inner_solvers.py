"""The inner (support-set) solvers of a meta-training run, built from its spec.

The glyph (:mod:`jiio_cli.tasks.fewshot.training`) and sinusoid
(:mod:`jiio_cli.tasks.fewshot.sinusoid_training`) runs expose the same inner-solve options
(``inner_iters``, ``inner_memory``, ``alpha_x``, ``alpha_x_final``, ``naive_steps``,
``naive_lr``) and turn them into the engine's JIIO and naive-loop settings the same way;
each task then wraps them in its own adaptation settings with its own penalty.
"""

from __future__ import annotations

from typing import Protocol

from jiio_cli.engine import JIIOConfig, NaiveConfig, SolverConfig, StepSchedule

__all__ = ["InnerSolveConfig", "inner_solvers"]


class InnerSolveConfig(Protocol):
    """The inner-solve options of a meta-training spec (read-only, as on a frozen dataclass).

    Attributes:
        inner_iters, inner_memory: JIIO's iteration budget and Anderson memory.
        alpha_x, alpha_x_final: JIIO's x step size, first and final.
        naive_steps, naive_lr: the naive loop's Adam steps and learning rate.
    """

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


def inner_solvers(
    spec: InnerSolveConfig, iterations: int | None = None
) -> tuple[JIIOConfig, NaiveConfig]:
    """JIIO's and the naive loop's settings for a run (``iterations`` overrides JIIO's budget).

    JIIO's refinement and the naive loop's forward and adjoint solves share one solver
    (memory 5, 30 iterations, tolerance 10⁻⁴).
    """
    solve = SolverConfig(memory=5, max_iter=30, tol=1e-4)
    jiio = JIIOConfig(
        alpha_x=StepSchedule(spec.alpha_x, spec.alpha_x_final),
        solver=SolverConfig(
            memory=spec.inner_memory, max_iter=iterations or spec.inner_iters, tol=1e-4
        ),
        refine=solve,
    )
    naive = NaiveConfig(
        method="adam", steps=spec.naive_steps, lr=spec.naive_lr, forward=solve, adjoint=solve
    )
    return jiio, naive
