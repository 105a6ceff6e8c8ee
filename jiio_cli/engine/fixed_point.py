"""Forward DEQ solve z* = f(z*, x) and adjoint solve μ = J_zᵀ μ + v at a fixed point."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from jiio_cli.engine.anderson import FixedPointResult, SolverConfig, fixed_point_solve
from jiio_cli.engine.problem import (
    Cell,
    Objective,
    fixed_input_map,
    lagrangian_grads,
    objective_grad_z,
)

__all__ = [
    "AdjointSolution",
    "ForwardSolution",
    "SolvedPoint",
    "adjoint_solve",
    "forward_solve",
    "solve_at",
]


@dataclass
class ForwardSolution:
    """z* (B, *z_shape) with the solver statistics of the flat solve."""

    z: Tensor
    stats: FixedPointResult


@dataclass
class AdjointSolution:
    """μ (B, *z_shape) solving μ = J_zᵀ μ + v, with the solver statistics."""

    mu: Tensor
    stats: FixedPointResult


def forward_solve(cell: Cell, x: Tensor, z0: Tensor, config: SolverConfig) -> ForwardSolution:
    """Solve z = f(z, x) per sample, starting from z0 (B, *z_shape). No autograd.

    x is fixed during the solve, so a cell that can compute its injection once does
    (:func:`~jiio_cli.engine.problem.fixed_input_map`).
    """
    shape = z0.shape

    def step(s: Tensor, _k: Tensor) -> Tensor:
        return f_at_x(s.view(shape)).reshape(shape[0], -1)

    with torch.no_grad():
        f_at_x = fixed_input_map(cell, x)
        stats = fixed_point_solve(step, z0.reshape(shape[0], -1), config)
    return ForwardSolution(z=stats.state.view(shape), stats=stats)


def adjoint_solve(
    cell: Cell, z: Tensor, x: Tensor, rhs: Tensor, mu0: Tensor | None, config: SolverConfig
) -> AdjointSolution:
    """Solve μ = J_zᵀ μ + v at the fixed point z of f(·, x).

    f is evaluated once with autograd; each iteration is one VJP through that graph.

    Args:
        cell: the DEQ map.
        z: fixed point (B, *z_shape).
        x: input (B, *x_shape).
        rhs: v, e.g. ∇_z ℓ, shape like z.
        mu0: warm start (zeros if None).
        config: solver settings.
    """
    shape = z.shape
    with torch.enable_grad():
        zr = z.detach().requires_grad_(True)
        fz = cell(zr, x.detach())

    flat_rhs = rhs.detach().reshape(shape[0], -1)

    def step(s: Tensor, _k: Tensor) -> Tensor:
        with torch.enable_grad():
            (vjp,) = torch.autograd.grad(fz, zr, s.view(shape), retain_graph=True)
        return vjp.reshape(shape[0], -1) + flat_rhs

    start = torch.zeros_like(flat_rhs) if mu0 is None else mu0.detach().reshape(shape[0], -1)
    # f's autograd graph was built before the loop, on the caller's stream: its backward
    # cannot be recorded into a CUDA graph, so the adjoint solve always runs eagerly.
    stats = fixed_point_solve(step, start, dataclasses.replace(config, graph=False))
    return AdjointSolution(mu=stats.state.view(shape), stats=stats)


@dataclass
class SolvedPoint:
    """z*, μ*, ℓ and the reduced gradient at one input x, with the two solves' statistics.

    ``f_evals`` and ``vjps`` (B,) and ``batch_f_evals`` are what :func:`solve_at` paid:
    the forward loop's f-evaluations plus f once for the adjoint solve's graph and once
    with the final VJP; the adjoint loop's VJPs plus that final one.
    """

    z: Tensor
    mu: Tensor
    objective: Tensor
    grad_x: Tensor
    forward: FixedPointResult
    adjoint: FixedPointResult

    @property
    def f_evals(self) -> Tensor:
        return self.forward.iterations + 2

    @property
    def vjps(self) -> Tensor:
        return self.adjoint.iterations + 1

    @property
    def batch_f_evals(self) -> int:
        return self.forward.steps + 2


def solve_at(
    cell: Cell,
    objective: Objective,
    x: Tensor,
    z0: Tensor,
    mu0: Tensor | None,
    forward: SolverConfig,
    adjoint: SolverConfig,
) -> SolvedPoint:
    """Everything the reduced problem min_x ℓ(z*(x), x) needs at one x.

    A forward solve from z0, the adjoint solve μ = J_zᵀ μ + ∇_z ℓ from μ0 (zeros if
    None), then ℓ(z*, x) and ∇_x ℓ + J_xᵀ μ* by one more f-evaluation and VJP. The
    naive method calls it at every step; JIIO once, at its returned x, warm-started from
    the loop's z and μ.
    """
    fwd = forward_solve(cell, x, z0, forward)
    z = fwd.z
    adj = adjoint_solve(cell, z, x, objective_grad_z(objective, z, x), mu0, adjoint)
    _, loss, _, grad_x = lagrangian_grads(cell, objective, z, x, adj.mu)
    return SolvedPoint(z, adj.mu, loss, grad_x, fwd.stats, adj.stats)
