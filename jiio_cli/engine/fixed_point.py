"""Forward DEQ solve z* = f(z*, x) and adjoint solve μ = J_zᵀ μ + v at a fixed point."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from jiio_cli.engine.anderson import FixedPointResult, SolverConfig, fixed_point_solve
from jiio_cli.engine.problem import Cell, fixed_input_map

__all__ = ["AdjointSolution", "ForwardSolution", "adjoint_solve", "forward_solve"]


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
