"""The naive baselines, the multi-scale state helper and trajectory snapshots."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from problems import quadratic_problem

from jiio_cli.engine import (
    Box,
    JIIOConfig,
    LinfBall,
    MultiScaleCell,
    NaiveConfig,
    SolverConfig,
    forward_solve,
    inner_solves_converged,
    jiio_solve,
    naive_solve,
)

INNER = SolverConfig(tol=1e-9, max_iter=100)


def test_gradient_descent_reaches_the_jiio_optimum(device: torch.device) -> None:
    problem, _, _ = quadratic_problem(3, gamma=1.0, device=device)
    tight = SolverConfig(memory=10, tol=1e-9, max_iter=400)
    exact = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=tight))
    assert exact.converged.all()
    # The step must be small for every draw: the x-curvature is at least γ = 1 but its
    # largest value varies from draw to draw, and at lr 0.2 about one draw in twenty
    # oscillates between two points instead of converging. At lr 0.05 (stable up to a
    # curvature of 40), 400 steps shrink the error by (1 − 0.05)⁴⁰⁰ ≈ 1e-9.
    steps = 400
    gd = naive_solve(
        problem,
        NaiveConfig(
            method="gd", steps=steps, lr=0.05, forward=INNER, adjoint=INNER, warm_start=True
        ),
    )
    assert ((gd.x - exact.x).norm(dim=1) / exact.x.norm(dim=1)).max() < 1e-4
    assert (gd.iterations == steps).all()
    # Costs add up: each step pays at least one f evaluation and one VJP per sample.
    assert (gd.f_evals >= steps + 1).all() and (gd.vjps >= steps + 1).all()
    assert gd.trace.shape[0] == steps + 1 and gd.trace[-1] <= gd.trace[0]


def test_pgd_stays_in_the_ball_and_lowers_the_objective() -> None:
    problem, _, _ = quadratic_problem(6, step_rule="sign")
    center = torch.rand(6, 4, dtype=torch.float64)
    problem.constraint = LinfBall(center, 0.1, Box())
    problem.x0 = center
    pgd = naive_solve(
        problem, NaiveConfig(method="pgd", steps=20, lr=0.02, forward=INNER, adjoint=INNER)
    )
    assert ((pgd.x - center).abs().amax(dim=1) <= 0.1).all()
    start = naive_solve(
        problem, NaiveConfig(method="pgd", steps=1, lr=1e-12, forward=INNER, adjoint=INNER)
    )
    assert (pgd.objective < start.objective).all()


def test_naive_stops_samples_that_converged() -> None:
    problem, _, _ = quadratic_problem(4, gamma=1.0)
    # lr 0.2 made gradient descent oscillate on about 5 % of the random draws (3 of 60
    # seeds) and the test fail; 0.1 converged on all of 200 (γ = 1 keeps 0.9⁴⁰⁰ ≪ 1e-6).
    result = naive_solve(
        problem,
        NaiveConfig(method="gd", steps=400, lr=0.1, tol=1e-6, forward=INNER, adjoint=INNER),
    )
    assert result.converged.all()
    assert (result.iterations < 400).all()


class TwoScaleCell(torch.nn.Module):
    """A list-state cell: a fine state (B, 6) and a coarse state (B, 3) that talk."""

    def __init__(self) -> None:
        super().__init__()
        self.fine = torch.nn.Linear(6 + 3 + 2, 6).double()
        self.coarse = torch.nn.Linear(6 + 3, 3).double()
        with torch.no_grad():
            self.fine.weight.mul_(0.3)
            self.coarse.weight.mul_(0.3)

    def forward(self, zs: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
        fine, coarse = zs
        new_fine = torch.tanh(self.fine(torch.cat([fine, coarse, x], dim=1)))
        new_coarse = torch.tanh(self.coarse(torch.cat([fine, coarse], dim=1)))
        return [new_fine, new_coarse]


def test_multiscale_cell_is_solved_as_one_flat_state() -> None:
    inner = TwoScaleCell()
    cell = MultiScaleCell(inner, [(6,), (3,)])
    x = torch.randn(5, 2, dtype=torch.float64)
    solution = forward_solve(
        cell, x, cell.init_state(5, "cpu", torch.float64), SolverConfig(tol=1e-12, max_iter=200)
    )
    assert solution.stats.converged.all()
    fine, coarse = cell.layout.unpack(solution.z)
    again = inner([fine, coarse], x)
    assert torch.allclose(again[0], fine, atol=1e-10) and torch.allclose(
        again[1], coarse, atol=1e-10
    )


def test_jiio_records_a_trajectory_snapshot() -> None:
    problem, _, _ = quadratic_problem(2)
    result = jiio_solve(problem, JIIOConfig(alpha_x=0.5, snapshot_at=3))
    assert result.snapshot is not None
    z_snap, x_snap = result.snapshot
    assert z_snap.shape == result.z.shape and x_snap.shape == result.x.shape
    assert not torch.equal(z_snap, result.z)


@pytest.mark.parametrize("method", ["anderson", "picard"])
def test_jiio_checkpoints_are_the_iterates_of_shorter_runs(method: str) -> None:
    problem, _, _ = quadratic_problem(3, constraint=Box(-0.3, 0.3))
    solver = SolverConfig(method=method, memory=4, tol=1e-30, max_iter=12, keep="last")
    long = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=solver, checkpoints=(4, 9, 40)))
    # 40 is never reached; the others hold x as it entered iterations 4 and 9, which is
    # the last iterate of runs of 5 and 10 iterations.
    assert sorted(long.checkpoints) == [4, 9]
    for at in (4, 9):
        short_solver = dataclasses.replace(solver, max_iter=at + 1)
        short = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=short_solver))
        z_at, x_at = long.checkpoints[at]
        assert torch.equal(x_at, short.x) and z_at.shape == short.z.shape


def test_naive_counts_the_inner_solves_that_stop_above_tolerance() -> None:
    from jiio_cli.engine.backtracking import replace_rows

    problem, _, _ = quadratic_problem(3)
    # Two iterations from zeros cannot reach 1e-12 on a random contractive DEQ.
    short = SolverConfig(memory=5, max_iter=2, tol=1e-12)

    def run(forward: SolverConfig, adjoint: SolverConfig):
        config = NaiveConfig(method="adam", steps=5, lr=0.01, forward=forward, adjoint=adjoint)
        return naive_solve(problem, config)

    full, both, forward_only = run(INNER, INNER), run(short, short), run(short, INNER)
    # Six solve points (steps 0..5), a forward and an adjoint solve at each.
    assert full.inner_unconverged is not None and (full.inner_unconverged == 0).all()
    assert both.inner_unconverged is not None and (both.inner_unconverged == 12).all()
    assert forward_only.inner_unconverged is not None
    assert (forward_only.inner_unconverged == 6).all()
    assert inner_solves_converged(full) == 1.0
    assert inner_solves_converged(both) == 0.0
    assert inner_solves_converged(forward_only) == 0.5
    # Rows solved again add their counts, as their other costs do.
    one_row, _, _ = quadratic_problem(1)
    again = naive_solve(
        one_row, NaiveConfig(method="adam", steps=5, lr=0.01, forward=short, adjoint=INNER)
    )
    merged = replace_rows(both, torch.tensor([1]), again)
    assert merged.inner_unconverged is not None
    assert merged.inner_unconverged.tolist() == [12, 18, 12]
    assert jiio_solve(problem, JIIOConfig(alpha_x=0.5)).inner_unconverged is None
