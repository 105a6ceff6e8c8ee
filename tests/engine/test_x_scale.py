"""JIIO with a diagonal preconditioner of the x step (``JIIOConfig.x_scale``)."""

from __future__ import annotations

import pytest
import torch
from problems import quadratic_problem
from torch import Tensor

from jiio_cli.engine import (
    Box,
    InputProblem,
    JIIOConfig,
    L2Ball,
    LinfBall,
    SolverConfig,
    jiio_solve,
)

TIGHT = SolverConfig(memory=10, tol=1e-8, max_iter=400)


def random_factors(n: int) -> tuple[float, ...]:
    """Fresh factors spread over [0.3, 3] (log-uniform)."""
    return tuple(float(v) for v in torch.exp(torch.empty(n).uniform_(-1.2, 1.1)))


def test_same_optimum_as_without_the_preconditioner() -> None:
    problem, _, _ = quadratic_problem(6, dx=4, gamma=1.0)
    plain = jiio_solve(problem, JIIOConfig(alpha_x=0.3, solver=TIGHT))
    scaled = jiio_solve(problem, JIIOConfig(alpha_x=0.3, solver=TIGHT, x_scale=random_factors(4)))
    assert bool(plain.converged.all()) and bool(scaled.converged.all())
    torch.testing.assert_close(scaled.x, plain.x, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(scaled.objective, plain.objective, rtol=1e-8, atol=1e-10)


def test_it_is_the_change_of_variables_x_equals_d_times_y() -> None:
    # JIIO with x_scale d on ℓ(z, x) takes the steps of plain JIIO on ℓ(z, d ⊙ y) with
    # y = x / d, so both runs must produce the same iterates (up to rounding).
    problem, cell, objective = quadratic_problem(5, dx=4, gamma=0.5)
    factors = random_factors(4)
    d = torch.tensor(factors, dtype=torch.float64)

    def cell_y(z: Tensor, y: Tensor) -> Tensor:
        return cell(z, y * d)

    def objective_y(z: Tensor, y: Tensor) -> Tensor:
        return objective(z, y * d)

    in_y = InputProblem(cell_y, objective_y, problem.z0, problem.x0 / d)
    # 25 iterations, not more: near convergence Anderson's least squares turns ill-conditioned
    # and amplifies rounding, so two correct orders of the same sums part by more than the
    # tolerance on some draws and CPU kernels (seen under AVX2 at 37 iterations). Within
    # 25, 150 fresh draws per kernel (default, AVX2; one thread) part by at most 3.3e-10,
    # hence atol 1e-9 below; the plain run, without the scale, parts from the scaled one
    # by 0.02-0.1 on values of about 0.5.
    solver = SolverConfig(memory=5, tol=1e-30, max_iter=25)
    config = JIIOConfig(alpha_x=0.4, solver=solver, x_weight=3.0)
    reference = jiio_solve(in_y, config)
    scaled = jiio_solve(
        problem, JIIOConfig(alpha_x=0.4, solver=solver, x_weight=3.0, x_scale=factors)
    )
    torch.testing.assert_close(scaled.x, reference.x * d, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(scaled.z, reference.z, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(scaled.trace, reference.trace, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["box", "linf"])
def test_coordinatewise_constraints_keep_the_constrained_optimum(kind: str) -> None:
    problem, _, _ = quadratic_problem(4, dx=3, gamma=0.2)
    problem.x0 = torch.zeros_like(problem.x0)
    problem.constraint = (
        Box(-0.05, 0.05) if kind == "box" else LinfBall(torch.zeros_like(problem.x0), 0.05)
    )
    plain = jiio_solve(problem, JIIOConfig(alpha_x=0.3, solver=TIGHT))
    scaled = jiio_solve(problem, JIIOConfig(alpha_x=0.3, solver=TIGHT, x_scale=random_factors(3)))
    assert bool(plain.converged.all()) and bool(scaled.converged.all())
    torch.testing.assert_close(scaled.x, plain.x, rtol=1e-6, atol=1e-7)


def test_refuses_what_it_cannot_do() -> None:
    problem, _, _ = quadratic_problem(2, dx=3)
    with pytest.raises(ValueError, match="positive"):
        JIIOConfig(x_scale=(1.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="3 entries"):
        jiio_solve(problem, JIIOConfig(x_scale=(1.0, 2.0)))
    problem.constraint = L2Ball(torch.zeros_like(problem.x0), 1.0)
    with pytest.raises(ValueError, match="coordinate by coordinate"):
        jiio_solve(problem, JIIOConfig(x_scale=(1.0, 2.0, 0.5)))
