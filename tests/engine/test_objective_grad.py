"""∇_z ℓ without f: the right-hand side of every adjoint solve."""

from __future__ import annotations

import torch
from problems import quadratic_problem

from jiio_cli.engine import lagrangian_grads, objective_grad_z


def test_objective_grad_z_is_the_closed_form_and_lagrangian_grads_at_zero_mu() -> None:
    _, cell, objective = quadratic_problem(5, dz=7, dx=3, dy=4)
    z = torch.randn(5, 7, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    got = objective_grad_z(objective, z, x)
    # ℓ = ½‖A z − y‖² + (γ/2)‖x‖² per row, so ∇_z ℓ = Aᵀ (A z − y) row by row.
    a = objective.readout.detach()
    want = (z @ a.T - objective.target) @ a
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    _, _, gz, _ = lagrangian_grads(cell, objective, z, x, torch.zeros_like(z))
    torch.testing.assert_close(got, gz, rtol=1e-12, atol=1e-12)
    assert not got.requires_grad


def test_objective_grad_z_is_zero_for_an_objective_without_z() -> None:
    z = torch.randn(4, 6)
    x = torch.randn(4, 2)
    got = objective_grad_z(lambda _z, x_: x_.pow(2).sum(dim=1), z, x)
    assert torch.equal(got, torch.zeros_like(z))
