"""Forward DEQ solve z* = f(z*, x) and adjoint solve μ = J_zᵀ μ + v at a fixed point."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jiio_cli.engine.anderson import (
    FixedPointResult,
    SolverConfig,
    fixed_point_solve,
    relative_residual,
)
from jiio_cli.engine.problem import (
    Cell,
    InputOptResult,
    Objective,
    fixed_input_map,
    grad_or_zeros,
    grads_or_zeros,
)

__all__ = [
    "AdjointSolution",
    "ForwardSolution",
    "SolvedPoint",
    "adjoint_solve",
    "forward_solve",
    "result_at",
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
    with torch.enable_grad():
        zr = z.detach().requires_grad_(True)
        fz = cell(zr, x.detach())
    return _adjoint_on_graph(fz, zr, rhs, mu0, config)


def _adjoint_on_graph(
    fz: Tensor, zr: Tensor, rhs: Tensor, mu0: Tensor | None, config: SolverConfig
) -> AdjointSolution:
    """The adjoint solve through a graph already built: fz = f(zr, ·) with zr a leaf that
    requires grad, (B, *z_shape). The graph is retained for the caller."""
    shape = zr.shape
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
    the forward loop's f-evaluations plus the one f-evaluation whose graph serves the
    adjoint solve and the final product; the adjoint loop's VJPs plus that final one
    (a product in x alone).
    """

    z: Tensor
    mu: Tensor
    objective: Tensor
    grad_x: Tensor
    forward: FixedPointResult
    adjoint: FixedPointResult

    @property
    def f_evals(self) -> Tensor:
        return self.forward.iterations + 1

    @property
    def vjps(self) -> Tensor:
        return self.adjoint.iterations + 1

    @property
    def batch_f_evals(self) -> int:
        return self.forward.steps + 1


def result_at(
    point: SolvedPoint,
    x: Tensor,
    residual_x: Tensor,
    *,
    tol: float,
    x_tol: float,
    loop_failed: Tensor | None = None,
    **counts: Any,
) -> InputOptResult:
    """An input optimiser's result at its final ``x`` (B, *x_shape), where ``point`` holds
    z*, μ* and ℓ and the solves that found them, with the x residual ``residual_x`` (B,).

    The z and μ residuals are the solves' own; a sample failed where either solve or the
    optimiser's loop (``loop_failed``, (B,) bool) failed or ℓ is not finite; it converged
    where it did not fail and ``residual_z``, ``residual_mu`` ≤ ``tol`` and ``residual_x``
    ≤ ``x_tol``. ``counts``: the method's remaining fields of :class:`InputOptResult`
    (iterations, costs, trace, method name, ...).
    """
    residual_z = point.forward.residual[:, 0]
    residual_mu = point.adjoint.residual[:, 0]
    failed = point.forward.failed | point.adjoint.failed | ~torch.isfinite(point.objective)
    if loop_failed is not None:
        failed = failed | loop_failed
    converged = (residual_z <= tol) & (residual_mu <= tol) & (residual_x <= x_tol) & ~failed
    return InputOptResult(
        z=point.z,
        x=x,
        mu=point.mu,
        objective=point.objective,
        residual_z=residual_z,
        residual_mu=residual_mu,
        residual_x=residual_x,
        converged=converged,
        failed=failed,
        **counts,
    )


def solve_at(
    cell: Cell,
    objective: Objective,
    x: Tensor,
    z0: Tensor,
    mu0: Tensor | None,
    forward: SolverConfig,
    adjoint: SolverConfig,
    solve_adjoint: bool = True,
) -> SolvedPoint:
    """Everything the reduced problem min_x ℓ(z*(x), x) needs at one x.

    A forward solve from z0; then f(z*, x) and ℓ(z*, x) once, with autograd in both z
    and x. That one graph gives the adjoint's right-hand side ∇_z ℓ, every VJP of the
    adjoint solve μ = J_zᵀ μ + ∇_z ℓ (from μ0, zeros if None) and, at μ*, the reduced
    gradient ∇_x ℓ + J_xᵀ μ* (a product in x alone). The naive method calls it at every
    step; JIIO once, at its returned x, warm-started from the loop's z and μ.

    With ``solve_adjoint`` False there is no adjoint solve: μ0 is kept, and one VJP in z
    and x at once gives both its adjoint residual ‖u − μ0‖ / ‖u‖ (u = ∇_z ℓ + J_zᵀ μ0,
    judged against ``adjoint.tol``) and the gradient ∇_x ℓ + J_xᵀ μ0. For callers that
    need x and z* but not μ* (attacks, latent codes fitted at test time).
    """
    fwd = forward_solve(cell, x, z0, forward)
    with torch.enable_grad():
        zr = fwd.z.detach().requires_grad_(True)
        xr = x.detach().requires_grad_(True)
        fz = cell(zr, xr)
        loss = objective(zr, xr)
    if not solve_adjoint:
        mu, stats, grad_x = _adjoint_residual_on_graph(fz, loss, zr, xr, mu0, adjoint.tol)
        return SolvedPoint(fwd.z, mu, loss.detach(), grad_x, fwd.stats, stats)
    with torch.enable_grad():
        rhs = grad_or_zeros([loss.sum()], zr, [None], retain_graph=True)
    adj = _adjoint_on_graph(fz, zr, rhs, mu0, adjoint)
    with torch.enable_grad():
        grad_x = grad_or_zeros([fz, loss], xr, [adj.mu, torch.ones_like(loss)])
    return SolvedPoint(fwd.z, adj.mu, loss.detach(), grad_x, fwd.stats, adj.stats)


def _adjoint_residual_on_graph(
    fz: Tensor, loss: Tensor, zr: Tensor, xr: Tensor, mu0: Tensor | None, tol: float
) -> tuple[Tensor, FixedPointResult, Tensor]:
    """μ0 as the adjoint, unsolved: (μ0, its statistics, ∇_x ℓ + J_xᵀ μ0) from one VJP.

    The statistics are those of a solve that stopped at its start: no iterations, the
    residual ‖u − μ0‖ / ‖u‖ with u = ∇_z ℓ + J_zᵀ μ0 (see :func:`relative_residual`),
    converged where that is ≤ ``tol``, failed where it is not finite (u or μ0 is not).
    """
    batch = zr.shape[0]
    mu = torch.zeros_like(zr) if mu0 is None else mu0.detach().reshape(zr.shape)
    with torch.enable_grad():
        u, grad_x = grads_or_zeros([fz, loss], (zr, xr), [mu, torch.ones_like(loss)])
    flat_mu = mu.reshape(batch, -1)
    residual = relative_residual(flat_mu, u.reshape(batch, -1))
    finite = torch.isfinite(residual[:, 0])
    stats = FixedPointResult(
        state=flat_mu,
        residual=residual,
        iterations=torch.zeros(batch, dtype=torch.long, device=zr.device),
        converged=finite & (residual[:, 0] <= tol),
        failed=~finite,
        steps=0,
    )
    return mu, stats, grad_x
