"""Solving the rows whose JIIO solve diverged again, with a smaller x step.

JIIO's x block takes the step x⁺ = x − α_x ∇_x. One α_x serves a whole batch, but rows
differ in curvature: where α_x · (curvature) is too large the augmented map stops being
a contraction on that row and its solve diverges (the x residual grows, or turns NaN),
while the other rows converge. Shrinking α_x for the whole batch would slow every row
down to the pace of the steepest one. Instead :func:`jiio_solve_backtracking` solves the
batch once, picks the rows that diverged, and solves just those again from their start
with α_x (the whole schedule) multiplied by ``shrink``, up to ``retries`` times.

The merged result holds each row's last solve, and its cost counts every solve the row
went through (iterations, f-evaluations and VJPs add up; ``batch_f_evals`` adds the
batch costs of the re-solves). Rows still diverged after the last retry keep their
last solve, with ``converged`` false, for the caller to report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from jiio_cli.engine.jiio import JIIOConfig, StepSchedule, jiio_solve
from jiio_cli.engine.problem import SOLUTION_FIELDS, InputOptResult, InputProblem

__all__ = ["Backtracking", "diverged_rows", "jiio_solve_backtracking", "replace_rows"]


@dataclass(frozen=True)
class Backtracking:
    """When a row counts as diverged and how it is solved again.

    Attributes:
        retries: how many times a diverged row is solved again (0: never).
        shrink: factor applied to every step size of α_x's schedule at each retry.
        diverged_residual: a row whose relative x residual exceeds this (or is NaN) has
            diverged; a converging solve that merely ran out of iterations sits far below.
    """

    retries: int = 2
    shrink: float = 0.25
    diverged_residual: float = 0.1

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be ≥ 0")
        if not 0.0 < self.shrink < 1.0:
            raise ValueError("shrink must lie in (0, 1)")
        if not self.diverged_residual > 0.0:
            raise ValueError("diverged_residual must be positive")


def diverged_rows(result: InputOptResult, threshold: float) -> Tensor:
    """(B,) bool: the x residual is above ``threshold`` or not finite, or the solve failed."""
    # A NaN compares False, so ``~(r <= t)`` counts it as diverged.
    return ~(result.residual_x <= threshold) | result.failed


def _shrunk(schedule: StepSchedule, factor: float) -> StepSchedule:
    final = None if schedule.final is None else schedule.final * factor
    return StepSchedule(schedule.initial * factor, final, schedule.switch_at)


def replace_rows(result: InputOptResult, rows: Tensor, again: InputOptResult) -> InputOptResult:
    """``result`` with its rows ``rows`` (indices, (R,)) replaced by ``again``'s (R rows),
    their costs added to the earlier ones. Snapshots and checkpoints are dropped (they
    would mix iterates of different solves); the trace stays the first solve's."""

    def put(full: Tensor, part: Tensor) -> Tensor:
        out = full.clone()
        out[rows] = part
        return out

    def add(full: Tensor, part: Tensor) -> Tensor:
        out = full.clone()
        out[rows] += part
        return out

    return dataclasses.replace(
        result,
        **{name: put(getattr(result, name), getattr(again, name)) for name in SOLUTION_FIELDS},
        iterations=add(result.iterations, again.iterations),
        f_evals=add(result.f_evals, again.f_evals),
        vjps=add(result.vjps, again.vjps),
        batch_f_evals=result.batch_f_evals + again.batch_f_evals,
        snapshot=None,
        checkpoints={},
        graph=result.graph and again.graph,
        inner_unconverged=(
            add(result.inner_unconverged, again.inner_unconverged)
            if result.inner_unconverged is not None and again.inner_unconverged is not None
            else None
        ),
    )


def jiio_solve_backtracking(
    problem_for: Callable[[Tensor | None], InputProblem],
    config: JIIOConfig,
    backtracking: Backtracking,
) -> InputOptResult:
    """JIIO on a batch, the diverged rows solved again with smaller steps (module docstring).

    Args:
        problem_for: builds the problem of the whole batch (``None``) or of the given
            row indices (R,) of it, each row from its own start (the problems of one
            batch must agree row for row).
        config: the JIIO settings of the first solve.
        backtracking: when a row has diverged, how often and by how much to shrink α_x.

    Returns:
        The merged :class:`InputOptResult` of the whole batch.
    """
    return _solve(problem_for, None, config, backtracking, backtracking.retries)


def _solve(
    problem_for: Callable[[Tensor | None], InputProblem],
    rows: Tensor | None,
    config: JIIOConfig,
    backtracking: Backtracking,
    retries: int,
) -> InputOptResult:
    result = jiio_solve(problem_for(rows), config)
    diverged = diverged_rows(result, backtracking.diverged_residual)
    # One host read per retry level, outside any solver loop.
    if retries == 0 or not bool(diverged.any()):
        return result
    local = diverged.nonzero().flatten()
    subset = local if rows is None else rows[local]
    smaller = dataclasses.replace(config, alpha_x=_shrunk(config.schedule, backtracking.shrink))
    again = _solve(problem_for, subset, smaller, backtracking, retries - 1)
    return replace_rows(result, local, again)
