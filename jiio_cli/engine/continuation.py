"""Continuing the rows whose JIIO solve ran out of iterations, from where they stopped.

A JIIO solve with a fixed budget T leaves some rows unconverged: not diverged, just
slower than the rest of the batch (on ill-conditioned inputs a few rows in a hundred
need two or three times the budget that suffices for the others). Raising T for the
whole batch would make every row pay for the slowest. Instead
:func:`continue_unconverged` takes a finished solve and runs JIIO again on just its
open rows (neither converged nor failed), for up to ``rounds`` more rounds of T
iterations each, every round starting from the previous round's (z, x, μ).

A continuing round differs from the first solve in three ways (:func:`continuation_config`):

* α_x is the schedule's final value throughout: a larger first phase exists for the
  far start, and the open rows are past it.
* Each row returns its last iterate, not its lowest-residual one. A restarted loop's
  lowest residual is usually its start (z and μ there were refined at the previous
  round's x), so "best" would hand back the start unchanged and the row would never
  move.
* No snapshot or checkpoints are recorded (the merged result keeps none; see
  :func:`~jiio_cli.engine.backtracking.replace_rows`).

Each round starts where the row's previous round stopped, but what the merged result
reports for a row is the round it converged in or, if it never did, its round with the
smallest largest residual: a last iterate can wander away from a better start, and
the extra rounds never make a reported row worse. Costs add up per row (iterations, f
evaluations, VJPs) and per batch (``batch_f_evals``). A row whose continuation fails
(NaN/Inf) keeps its previous, finite solution, with that round's costs, and is not
continued again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from jiio_cli.engine.backtracking import replace_rows
from jiio_cli.engine.jiio import JIIOConfig, jiio_solve
from jiio_cli.engine.problem import SOLUTION_FIELDS, InputOptResult, InputProblem

__all__ = ["continuation_config", "continue_unconverged", "jiio_solve_continuing"]


def continuation_config(config: JIIOConfig) -> JIIOConfig:
    """The settings of a continuing round (module docstring): the same budget, memory,
    tolerances and weights, α_x fixed at the schedule's final value, the last iterate
    kept, nothing recorded."""
    max_iter = config.solver.max_iter
    final_alpha = config.schedule.value(max_iter - 1, max_iter)
    return dataclasses.replace(
        config,
        alpha_x=final_alpha,
        solver=dataclasses.replace(config.solver, keep="last"),
        snapshot_at=None,
        checkpoints=(),
    )


def continue_unconverged(
    problem_for: Callable[[Tensor | None], InputProblem],
    result: InputOptResult,
    config: JIIOConfig,
    rounds: int,
) -> InputOptResult:
    """``result`` with its open rows solved further, up to ``rounds`` more rounds.

    Args:
        problem_for: builds the problem of the given row indices (R,) of the batch
            (``None``: all rows); only its cell, objective, constraint and step rule are
            used, its start is replaced by where the row's previous round stopped.
        result: a finished JIIO solve of the whole batch with ``config``.
        config: the settings ``result`` was solved with; continuing rounds use
            :func:`continuation_config` of them.
        rounds: the most rounds to add (0 returns ``result`` itself).

    Returns:
        The merged :class:`InputOptResult`. Rows that were never continued are
        ``result``'s, bit for bit. A continued row holds the round it converged in, or,
        if it never did, the round with the smallest largest residual (a last iterate
        can be worse than its start: the reported one never is); its costs are those
        of all its rounds.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    later = continuation_config(config)
    # Where each row's last round stopped: the next round starts there.
    z, x, mu = result.z, result.x, result.mu
    given_up = torch.zeros_like(result.failed)
    for _ in range(rounds):
        open_rows = ~result.converged & ~result.failed & ~given_up
        # One host read per round, outside any solver loop.
        if not bool(open_rows.any()):
            break
        rows = open_rows.nonzero().flatten()
        problem = dataclasses.replace(problem_for(rows), z0=z[rows], x0=x[rows])
        again = jiio_solve(problem, later, mu0=mu[rows])
        z, x, mu = (
            z.index_copy(0, rows, again.z),
            x.index_copy(0, rows, again.x),
            mu.index_copy(0, rows, again.mu),
        )
        given_up = given_up.index_fill(0, rows[again.failed], True)
        # A NaN residual compares false: a failed round never replaces a finite one.
        better = _largest_residual(again) < _largest_residual(result)[rows]
        reported = _solution_where(again.converged | better, again, result, rows)
        result = replace_rows(result, rows, reported)
    return result


def jiio_solve_continuing(
    problem_for: Callable[[Tensor | None], InputProblem],
    config: JIIOConfig,
    rounds: int,
) -> InputOptResult:
    """JIIO on the batch ``problem_for(None)``, then :func:`continue_unconverged`."""
    return continue_unconverged(problem_for, jiio_solve(problem_for(None), config), config, rounds)


def _largest_residual(result: InputOptResult) -> Tensor:
    """max(residual_z, residual_mu, residual_x) per row, (B,) (NaN where one is)."""
    return torch.stack([result.residual_z, result.residual_mu, result.residual_x]).amax(0)


def _solution_where(
    take_new: Tensor, new: InputOptResult, old: InputOptResult, rows: Tensor
) -> InputOptResult:
    """``new`` (the R rows ``rows`` of ``old``, solved further) with the solution and
    flags of each row where ``take_new`` (R,) is false taken back from ``old``; the costs
    stay ``new``'s."""

    def pick(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(take_new.view(-1, *[1] * (a.dim() - 1)), a, b)

    return dataclasses.replace(
        new,
        **{name: pick(getattr(new, name), getattr(old, name)[rows]) for name in SOLUTION_FIELDS},
    )
