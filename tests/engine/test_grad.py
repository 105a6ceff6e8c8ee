"""Parameter gradients: μ* is the adjoint, envelope gradients, implicit backward."""

from __future__ import annotations

import torch
from problems import TanhCell, quadratic_problem

from jiio_cli.engine import (
    JIIOConfig,
    SolverConfig,
    adjoint_solve,
    forward_solve,
    implicit_fixed_point,
    jacobian_penalty,
    jiio_solve,
    lagrangian_grads,
    optimal_value_surrogate,
)

EXACT = JIIOConfig(
    alpha_x=0.5,
    solver=SolverConfig(memory=10, tol=1e-11, max_iter=600),
    refine=SolverConfig(memory=10, tol=1e-13, max_iter=200),
)


def test_mu_star_is_the_adjoint_at_the_solution(device: torch.device) -> None:
    problem, cell, objective = quadratic_problem(5, device=device)
    result = jiio_solve(problem, EXACT)
    assert result.converged.all()
    zeros = torch.zeros_like(result.z)
    _, _, grad_z, _ = lagrangian_grads(cell, objective, result.z, result.x, zeros)
    tight = SolverConfig(tol=1e-13, max_iter=300)
    fresh = adjoint_solve(cell, result.z, result.x, grad_z, None, tight)
    rel = (fresh.mu - result.mu).norm(dim=1) / fresh.mu.norm(dim=1)
    assert rel.max() < 1e-8
    # And the adjoint gradient of the reduced objective vanishes at x*.
    _, _, _, grad_x = lagrangian_grads(cell, objective, result.z, result.x, result.mu)
    assert grad_x.norm(dim=1).max() < 1e-8


def test_parameter_gradient_from_mu_matches_finite_differences() -> None:
    problem, cell, objective = quadratic_problem(3)
    params = [*cell.parameters(), *objective.parameters()]

    def optimal_value() -> float:
        with torch.no_grad():
            return float(jiio_solve(problem, EXACT).objective.sum())

    result = jiio_solve(problem, EXACT)
    surrogate = optimal_value_surrogate(cell, objective, result.z, result.x, result.mu).sum()
    assert torch.allclose(surrogate, result.objective.sum(), rtol=1e-10)
    grads = torch.autograd.grad(surrogate, params)

    directions = [torch.randn_like(p) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions, strict=True))
    h = 1e-5
    with torch.no_grad():
        for p, d in zip(params, directions, strict=True):
            p.add_(h * d)
        plus = optimal_value()
        for p, d in zip(params, directions, strict=True):
            p.sub_(2 * h * d)
        minus = optimal_value()
        for p, d in zip(params, directions, strict=True):
            p.add_(h * d)
    numeric = (plus - minus) / (2 * h)
    assert abs(analytic - numeric) <= 1e-4 * abs(numeric)


def _functional_cell(weight: torch.Tensor, inject: torch.Tensor, bias: torch.Tensor):
    def cell(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ weight.T + x @ inject.T + bias)

    return cell


def test_implicit_backward_passes_gradcheck(device: torch.device) -> None:
    dz, dx = 5, 3
    base = TanhCell(dz, dx, 0.6).to(device)
    weight = base.weight.detach().clone().requires_grad_(True)
    inject = base.inject.detach().clone().requires_grad_(True)
    x = torch.randn(2, dx, dtype=torch.float64, device=device, requires_grad=True)
    tight = SolverConfig(memory=6, tol=1e-13, max_iter=300)

    def deq(x_in: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cell = _functional_cell(w, u, base.bias.detach())
        z0 = torch.zeros(x_in.shape[0], dz, dtype=x_in.dtype, device=x_in.device)
        z_star = forward_solve(cell, x_in.detach(), z0, tight).z
        return implicit_fixed_point(cell, z_star, x_in, tight)

    assert torch.autograd.gradcheck(deq, (x, weight, inject), atol=1e-7, rtol=1e-5)


def test_warm_started_adjoint_gives_the_same_gradient() -> None:
    problem, cell, _ = quadratic_problem(4)
    result = jiio_solve(problem, EXACT)
    clean = torch.randn_like(result.z)

    def grads(warm: torch.Tensor | None) -> list[torch.Tensor]:
        cfg = SolverConfig(tol=1e-12, max_iter=300)
        z = implicit_fixed_point(cell, result.z, result.x, cfg, warm_start=warm)
        loss = (z - clean).pow(2).sum()  # a training loss that differs from ℓ
        return list(torch.autograd.grad(loss, list(cell.parameters())))

    for cold, warm in zip(grads(None), grads(result.mu), strict=True):
        assert torch.allclose(cold, warm, rtol=1e-7, atol=1e-10)


def test_jacobian_penalty_estimates_the_frobenius_norm() -> None:
    cell = TanhCell(6, 3, 0.8)
    z = torch.randn(3, 6, dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64)

    def jac_sq(i: int) -> torch.Tensor:
        jac = torch.autograd.functional.jacobian(lambda zz: cell(zz[None], x[i : i + 1])[0], z[i])
        return jac.pow(2).sum() / 6

    exact = torch.stack([jac_sq(i) for i in range(3)])
    estimate = jacobian_penalty(cell, z, x, n_probes=4000)
    assert torch.allclose(estimate, exact, rtol=0.1)
    penalty = jacobian_penalty(cell, z, x).sum()
    penalty.backward()
    assert cell.weight.grad is not None and cell.weight.grad.abs().sum() > 0
