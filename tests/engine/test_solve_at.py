"""solve_at: z*, μ*, ℓ and the reduced gradient at one x, from one graph of f and ℓ."""

from __future__ import annotations

import torch
from problems import quadratic_problem
from torch import Tensor

from jiio_cli.engine import SolverConfig, forward_solve, lagrangian_grads, solve_at
from jiio_cli.engine.anderson import RESIDUAL_FLOOR

TIGHT = SolverConfig(memory=5, max_iter=200, tol=1e-13)


class CountingCell:
    """Wraps a cell and counts its evaluations (whole-batch calls)."""

    def __init__(self, cell: torch.nn.Module) -> None:
        self.cell = cell
        self.calls = 0

    def __call__(self, z: Tensor, x: Tensor) -> Tensor:
        self.calls += 1
        return self.cell(z, x)


def test_reduced_gradient_matches_finite_differences_of_the_solved_objective() -> None:
    problem, cell, objective = quadratic_problem(3, dz=6, dx=3)
    x = torch.randn(3, 3, dtype=torch.float64)
    point = solve_at(cell, objective, x, problem.z0, None, TIGHT, TIGHT)
    assert bool(point.forward.converged.all()) and bool(point.adjoint.converged.all())

    def solved_objective(x_: Tensor) -> Tensor:
        z = forward_solve(cell, x_, problem.z0, TIGHT).z
        return objective(z, x_).detach()

    torch.testing.assert_close(point.objective, solved_objective(x), rtol=1e-12, atol=1e-12)
    h = 1e-6
    fd = torch.zeros_like(x)
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        # Rows are independent problems, so one batched difference gives every row's entry j.
        fd[:, j] = (solved_objective(x + e) - solved_objective(x - e)) / (2 * h)
    torch.testing.assert_close(point.grad_x, fd, rtol=1e-7, atol=1e-8)
    assert not point.grad_x.requires_grad and not point.objective.requires_grad


def test_one_f_evaluation_beyond_the_forward_loop() -> None:
    problem, cell, objective = quadratic_problem(4, dz=5, dx=2)
    counting = CountingCell(cell)
    cfg = SolverConfig(memory=3, max_iter=40, tol=1e-10)
    point = solve_at(counting, objective, problem.x0, problem.z0, None, cfg, cfg)
    assert counting.calls == point.batch_f_evals == point.forward.steps + 1
    assert torch.equal(point.f_evals, point.forward.iterations + 1)
    assert torch.equal(point.vjps, point.adjoint.iterations + 1)


def test_objectives_that_ignore_z_or_x() -> None:
    problem, cell, objective = quadratic_problem(2, dz=5, dx=3)
    x = torch.randn(2, 3, dtype=torch.float64)
    only_x = solve_at(cell, lambda _z, x_: x_.pow(2).sum(dim=1), x, problem.z0, None, TIGHT, TIGHT)
    # ℓ without z: the adjoint is zero and the reduced gradient is ∇_x ℓ = 2x.
    assert torch.equal(only_x.mu, torch.zeros_like(only_x.mu))
    torch.testing.assert_close(only_x.grad_x, 2 * x, rtol=1e-12, atol=1e-12)
    # ℓ without x: the reduced gradient is J_xᵀ μ* alone, which the full objective's
    # reduced gradient minus its explicit part ∇_x (γ/2)‖x‖² = γx must equal.
    only_z = solve_at(
        cell, lambda z, _x: objective(z, torch.zeros_like(_x)), x, problem.z0, None, TIGHT, TIGHT
    )
    full = solve_at(cell, objective, x, problem.z0, None, TIGHT, TIGHT)
    torch.testing.assert_close(
        only_z.grad_x, full.grad_x - objective.gamma * x, rtol=1e-10, atol=1e-12
    )


def test_without_the_adjoint_solve_mu0_is_kept_and_judged_by_one_vjp() -> None:
    problem, cell, objective = quadratic_problem(4, dz=6, dx=3)
    x = torch.randn(4, 3, dtype=torch.float64)
    solved = solve_at(cell, objective, x, problem.z0, None, TIGHT, TIGHT)
    # A start that is the adjoint for two rows and a perturbed one for the other two.
    mu0 = solved.mu.clone()
    mu0[2:] += 0.1 * torch.randn_like(mu0[2:])
    counting = CountingCell(cell)
    kept = solve_at(counting, objective, x, problem.z0, mu0, TIGHT, TIGHT, solve_adjoint=False)
    assert torch.equal(kept.mu, mu0)
    assert counting.calls == kept.batch_f_evals == kept.forward.steps + 1
    assert torch.equal(kept.vjps, torch.ones(4, dtype=torch.long))
    assert kept.adjoint.steps == 0
    # The reduced gradient and residual at μ0, from the Lagrangian's gradients there.
    _, _, u_z, u_x = lagrangian_grads(cell, objective, kept.z, x, mu0)
    torch.testing.assert_close(kept.grad_x, u_x, rtol=1e-12, atol=1e-12)
    want = (u_z - mu0).norm(dim=1) / (u_z.norm(dim=1) + RESIDUAL_FLOOR * 6**0.5)
    torch.testing.assert_close(kept.adjoint.residual[:, 0], want, rtol=1e-10, atol=1e-15)
    assert kept.adjoint.converged.tolist() == [True, True, False, False]
    # At μ* itself it is the full solve's answer.
    torch.testing.assert_close(kept.grad_x[:2], solved.grad_x[:2], rtol=1e-10, atol=1e-12)
    assert torch.equal(kept.z, solved.z) and torch.equal(kept.objective, solved.objective)


def test_without_the_adjoint_solve_a_start_of_none_is_zero() -> None:
    problem, cell, objective = quadratic_problem(2, dz=5, dx=2)
    kept = solve_at(
        cell, objective, problem.x0, problem.z0, None, TIGHT, TIGHT, solve_adjoint=False
    )
    assert torch.equal(kept.mu, torch.zeros_like(kept.mu))
    # u = ∇_z ℓ ≠ 0, so μ = 0 is off by all of it: a relative residual of 1 (less the
    # denominator's floor of 1e-6·√N).
    ones = torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(kept.adjoint.residual[:, 0], ones, rtol=0, atol=1e-4)
    assert not kept.adjoint.converged.any() and not kept.adjoint.failed.any()
