"""Continuation: rows whose JIIO solve ran out of iterations go on from where they stopped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from problems import scaled_row_problems
from torch import Tensor

from jiio_cli.engine import (
    InputOptResult,
    InputProblem,
    JIIOConfig,
    SolverConfig,
    StepSchedule,
    continuation_config,
    continue_unconverged,
    jiio_solve,
    jiio_solve_continuing,
)

# Rows 1 and 3 have flat objectives (small scales), so their x tends to converge slowly.
SCALES = (1.0, 0.02, 1.0, 0.05, 1.0, 1.0)
SOLVER = SolverConfig(memory=5, tol=1e-8, max_iter=3000)


def _problems(seed: int) -> Callable[[Tensor | None], InputProblem]:
    return scaled_row_problems(SCALES, seed)


def _split_budget(problem_for: Callable[[Tensor | None], InputProblem]) -> JIIOConfig:
    """A budget that leaves some rows open and converges the others, on any CPU.

    How many iterations each row needs depends on rounding (kernels, threads, BLAS), so
    the budget is read off a measured solve: the fastest row's own count. A row's iterates
    do not depend on the budget (rows stop one by one), so that row converges within it,
    while the slowest row is stopped dozens of iterations short of the loop's tolerance
    (tol/10), far above tol where the returned point is judged.
    """
    needed = jiio_solve(problem_for(None), JIIOConfig(alpha_x=0.5, solver=SOLVER)).iterations
    fastest, slowest = int(needed.min()), int(needed.max())
    assert slowest >= fastest + 30, "the rows' stiffnesses should set their budgets apart"
    return JIIOConfig(alpha_x=0.5, solver=replace(SOLVER, max_iter=fastest))


@pytest.mark.parametrize("seed", [3, 4])
def test_unconverged_rows_continue_to_the_optimum_and_pay_for_every_round(seed: int) -> None:
    problem_for = _problems(seed)
    config = _split_budget(problem_for)
    first = jiio_solve(problem_for(None), config)
    open_rows = ~first.converged
    # The premise, built by the budget: some rows open, others converged.
    assert open_rows.any() and first.converged.any()
    assert not first.failed.any()

    result = continue_unconverged(problem_for, first, config, rounds=3)
    assert result.converged.all() and not result.failed.any()
    # Rows that converged at once are the first solve's, bit for bit.
    done = first.converged
    for name in ("x", "z", "mu", "objective", "residual_x", "iterations", "f_evals", "vjps"):
        assert torch.equal(getattr(result, name)[done], getattr(first, name)[done]), name
    # The continued rows reach the optimum a long single solve finds.
    long = JIIOConfig(alpha_x=0.5, solver=SolverConfig(memory=5, tol=1e-10, max_iter=3000))
    reference = jiio_solve(problem_for(None), long)
    assert reference.converged.all()
    torch.testing.assert_close(result.x[open_rows], reference.x[open_rows], atol=1e-6, rtol=0)
    torch.testing.assert_close(
        result.objective[open_rows], reference.objective[open_rows], atol=1e-9, rtol=1e-7
    )
    # Each continued row paid for its first round and at least part of another one.
    assert (result.iterations[open_rows] > config.solver.max_iter).all()
    assert (result.f_evals[open_rows] > first.f_evals[open_rows]).all()
    assert (result.vjps[open_rows] > first.vjps[open_rows]).all()
    assert result.batch_f_evals > first.batch_f_evals


def test_the_whole_solve_equals_a_solve_then_its_continuation() -> None:
    problem_for = _problems(3)
    config = _split_budget(problem_for)
    whole = jiio_solve_continuing(problem_for, config, rounds=2)
    parts = continue_unconverged(problem_for, jiio_solve(problem_for(None), config), config, 2)
    for name in ("x", "z", "mu", "objective", "converged", "iterations", "f_evals"):
        assert torch.equal(getattr(whole, name), getattr(parts, name)), name
    assert whole.batch_f_evals == parts.batch_f_evals


def test_no_rounds_and_no_open_rows_leave_the_result_as_it_is() -> None:
    problem_for = _problems(3)
    config = _split_budget(problem_for)
    first = jiio_solve(problem_for(None), config)
    assert not first.converged.all()
    assert continue_unconverged(problem_for, first, config, rounds=0) is first
    converged = continue_unconverged(problem_for, first, config, rounds=5)
    assert converged.converged.all()
    again = continue_unconverged(problem_for, converged, config, rounds=5)
    assert again is converged
    with pytest.raises(ValueError, match="rounds"):
        continue_unconverged(problem_for, first, config, rounds=-1)


def test_a_continuation_that_fails_keeps_the_rows_previous_solution() -> None:
    problem_for = _problems(3)
    config = _split_budget(problem_for)
    first = jiio_solve(problem_for(None), config)
    open_rows = ~first.converged
    assert open_rows.any()
    calls: list[Tensor] = []

    def broken_later(rows: Tensor | None) -> InputProblem:
        problem = problem_for(rows)
        if rows is None:
            return problem
        calls.append(rows)
        cell = problem.cell
        return InputProblem(
            lambda z, x: cell(z, x) * float("nan"), problem.objective, problem.z0, problem.x0
        )

    result = continue_unconverged(broken_later, first, config, rounds=3)
    # One attempt: a row whose continuation failed is not continued again.
    assert len(calls) == 1 and torch.equal(calls[0], open_rows.nonzero().flatten())
    for name in ("x", "z", "mu", "objective", "residual_x", "converged", "failed"):
        assert torch.equal(getattr(result, name), getattr(first, name)), name
    # The failed round's cost is still counted.
    assert (result.iterations[open_rows] > first.iterations[open_rows]).all()
    assert result.batch_f_evals > first.batch_f_evals


def test_continuing_rounds_take_the_final_step_and_return_the_last_iterate() -> None:
    config = JIIOConfig(
        alpha_x=StepSchedule(0.06, 0.02, switch_at=30),
        solver=SolverConfig(memory=10, max_iter=300, tol=1e-2),
        snapshot_at=20,
        checkpoints=(10, 50),
    )
    later = continuation_config(config)
    assert later.alpha_x == 0.02 and later.schedule.value(0, 300) == 0.02
    assert later.solver.keep == "last" and config.solver.keep == "best"
    assert later.solver.max_iter == 300 and later.solver.memory == 10
    assert later.snapshot_at is None and later.checkpoints == ()
    assert later.refine == config.refine and later.x_weight == config.x_weight


def test_a_round_that_ends_worse_than_it_started_is_not_reported() -> None:
    """A continuing round here solves a moved problem: rows 0, 2 and 4 have z's targets
    shifted by 30, so they end the round far from where they started (residuals several
    times larger),
    while rows 1, 3 and 5 solve the same problem 20 iterations further (smaller ones). The
    former keep their first answer, the latter take the round's, and every row pays."""
    problem_for = _problems(3)
    shift = torch.tensor([30.0, 0.0, 30.0, 0.0, 30.0, 0.0], dtype=torch.float64)
    config = JIIOConfig(alpha_x=0.5, solver=SolverConfig(memory=5, tol=1e-8, max_iter=20))
    first = jiio_solve(problem_for(None), config)
    assert not first.converged.any()

    def moved_later(rows: Tensor | None) -> InputProblem:
        problem = problem_for(rows)
        if rows is None:
            return problem
        objective, moved_by = problem.objective, shift[rows, None]
        return InputProblem(
            problem.cell, lambda z, x: objective(z - moved_by, x), problem.z0, problem.x0
        )

    moved = moved_later(torch.arange(first.x.shape[0]))
    start = InputProblem(moved.cell, moved.objective, first.z, first.x)
    again = jiio_solve(start, continuation_config(config), mu0=first.mu)

    def largest(r: InputOptResult) -> Tensor:
        return torch.stack([r.residual_z, r.residual_mu, r.residual_x]).amax(0)

    worse = largest(again) > largest(first)
    # The premise, built by the shift: exactly the moved rows end the round worse.
    assert worse.tolist() == (shift > 0).tolist() and not again.converged.any()

    result = continue_unconverged(moved_later, first, config, rounds=1)
    for name in ("x", "z", "mu", "objective", "residual_x", "converged", "failed"):
        assert torch.equal(getattr(result, name)[worse], getattr(first, name)[worse]), name
        assert torch.equal(getattr(result, name)[~worse], getattr(again, name)[~worse]), name
    assert torch.equal(result.iterations, first.iterations + again.iterations)
