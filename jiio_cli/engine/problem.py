"""The input-optimisation problem and the result every solver returns.

    minimise_x  Σ_b ℓ_b(z*_b, x_b)   subject to   z*_b = f(z*_b, x_b),   x_b ∈ 𝒳_b

for a batch of B independent samples. The cell f and the objective ℓ must treat batch
rows independently (no BatchNorm, no batch means inside ℓ): every solver freezes
converged samples and reports per-sample statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from jiio_cli.engine.constraints import Constraint, NoConstraint, StepRule

__all__ = [
    "SOLUTION_FIELDS",
    "Cell",
    "InputOptResult",
    "InputProblem",
    "Objective",
    "fixed_input_map",
    "grad_or_zeros",
    "grads_or_zeros",
    "lagrangian_grads",
    "objective_grad_z",
]

Cell = Callable[[Tensor, Tensor], Tensor]
"""f(z, x) -> z', with z of shape (B, *z_shape) and x of shape (B, *x_shape)."""

Objective = Callable[[Tensor, Tensor], Tensor]
"""ℓ(z, x) -> (B,) per-sample objective (targets, masks, regularisers bound in)."""


def fixed_input_map(cell: Cell, x: Tensor) -> Callable[[Tensor], Tensor]:
    """z ↦ f(z, x) for one fixed x (B, *x_shape), as a forward solve iterates it.

    A cell whose input enters through an injection u = inj(x) may offer
    ``with_fixed_input(x)``, returning that map with u computed once; it must equal
    f(·, x). Every other cell is called as f(z, x) at each evaluation.
    """
    bind = getattr(cell, "with_fixed_input", None)
    if callable(bind):
        return bind(x)
    return lambda z: cell(z, x)


@dataclass
class InputProblem:
    """A batch of input-optimisation problems through one DEQ.

    Attributes:
        cell: the DEQ map f(z, x); any callable or ``nn.Module``.
        objective: per-sample ℓ(z, x) → (B,), including any regulariser r(x).
        z0: initial state and template for z's shape (B, *z_shape).
        x0: initial input (B, *x_shape); projected onto the constraint before use.
        constraint: the feasible set 𝒳 (default: none).
        step_rule: direction of the x step: ``plain`` (−∇), ``l2`` (−∇/‖∇‖) or
            ``sign`` (−sign ∇).
    """

    cell: Cell
    objective: Objective
    z0: Tensor
    x0: Tensor
    constraint: Constraint = field(default_factory=NoConstraint)
    step_rule: StepRule = "plain"

    def __post_init__(self) -> None:
        if self.z0.shape[0] != self.x0.shape[0]:
            raise ValueError(
                f"z0 and x0 disagree on the batch size: {self.z0.shape[0]} vs {self.x0.shape[0]}"
            )
        if self.step_rule not in ("plain", "l2", "sign"):
            raise ValueError(f"unknown step rule {self.step_rule!r}")

    @property
    def batch_size(self) -> int:
        return self.z0.shape[0]


@dataclass
class InputOptResult:
    """Solution of an :class:`InputProblem` and per-sample statistics.

    Residuals are relative (see ``anderson.relative_residual``): ``residual_z`` of the
    fixed point ‖f(z, x) − z‖, ``residual_mu`` of the adjoint equation
    ‖∇_z ℓ + J_zᵀ μ − μ‖, ``residual_x`` of one projected x step
    ‖x − Π(x − α step(∇_x))‖ with the method's final step size α.

    Attributes:
        z: fixed point at the returned x, (B, *z_shape).
        x: optimised input, always inside the constraint, (B, *x_shape).
        mu: adjoint μ at (z, x), (B, *z_shape).
        objective: ℓ(z, x) per sample, (B,).
        residual_z, residual_mu, residual_x: (B,) relative residuals.
        converged: all three residuals ≤ the tolerance, (B,) bool.
        failed: a NaN/Inf appeared for the sample, (B,) bool.
        iterations: outer iterations (JIIO iterations or naive steps) per sample, (B,).
        f_evals: evaluations of f spent on the sample, (B,).
        vjps: vector-Jacobian products through f spent on the sample, (B,).
        batch_f_evals: evaluations of f on the whole batch (the cost actually paid).
        trace: mean objective per outer iteration (T,), on the device; for JIIO this is
            ℓ(z_k, x_k) at the iterate (z not yet at its fixed point).
        method: name of the method that produced the result.
        snapshot: optional (z, x) recorded at a chosen iteration (Jacobian regulariser).
        checkpoints: (z, x) at the iterations of ``JIIOConfig.checkpoints`` that the loop
            reached (z is the iterate, not re-solved at x).
        graph: JIIO's loop was replayed from a CUDA graph (``SolverConfig.graph``).
        graph_failure: why capture was abandoned (the loop then ran eagerly), or None.
        inner_unconverged: for the naive method, how many of the sample's inner solves
            (a forward and an adjoint solve per step while it was active) ended without
            reaching their tolerance (at their iteration cap, or failed), (B,) int64;
            None for JIIO.
    """

    z: Tensor
    x: Tensor
    mu: Tensor
    objective: Tensor
    residual_z: Tensor
    residual_mu: Tensor
    residual_x: Tensor
    converged: Tensor
    failed: Tensor
    iterations: Tensor
    f_evals: Tensor
    vjps: Tensor
    batch_f_evals: int
    trace: Tensor
    method: str
    snapshot: tuple[Tensor, Tensor] | None = None
    checkpoints: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    graph: bool = False
    graph_failure: str | None = None
    inner_unconverged: Tensor | None = None


SOLUTION_FIELDS = (
    "z",
    "x",
    "mu",
    "objective",
    "residual_z",
    "residual_mu",
    "residual_x",
    "converged",
    "failed",
)
"""The per-sample fields of an :class:`InputOptResult` that say where a sample ended and
how well (its costs, trace and recordings aside): what merging rows of two solves takes."""


def lagrangian_grads(
    cell: Cell, objective: Objective, z: Tensor, x: Tensor, mu: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One f evaluation and one VJP: the gradients of the Lagrangian.

    With 𝓛 = ℓ(z, x) + μᵀ (f(z, x) − z), returns

        f(z, x),  ℓ(z, x),  u_z = ∇_z ℓ + J_zᵀ μ,  u_x = ∇_x ℓ + J_xᵀ μ

    (so ∂𝓛/∂z = u_z − μ and ∂𝓛/∂x = u_x), all detached. Shapes: f and u_z like z,
    u_x like x, ℓ (B,).
    """
    with torch.enable_grad():
        zr = z.detach().requires_grad_(True)
        xr = x.detach().requires_grad_(True)
        fz = cell(zr, xr)
        loss = objective(zr, xr)
        gz, gx = torch.autograd.grad(
            (fz, loss),
            (zr, xr),
            (mu.detach(), torch.ones_like(loss)),
            allow_unused=True,
        )
    gz = torch.zeros_like(z) if gz is None else gz
    gx = torch.zeros_like(x) if gx is None else gx
    return fz.detach(), loss.detach(), gz, gx


def objective_grad_z(objective: Objective, z: Tensor, x: Tensor) -> Tensor:
    """∇_z ℓ(z, x), detached, shape like z: the adjoint equation's right-hand side.

    Only the objective is differentiated. ``lagrangian_grads`` with μ = 0 gives the same
    values but also evaluates f and backpropagates a zero cotangent through it, an f
    evaluation and a VJP spent for nothing.
    """
    with torch.enable_grad():
        zr = z.detach().requires_grad_(True)
        loss = objective(zr, x.detach())
        return grad_or_zeros([loss.sum()], zr, [None])


def grad_or_zeros(
    outputs: list[Tensor],
    leaf: Tensor,
    cotangents: list[Tensor | None],
    retain_graph: bool = False,
) -> Tensor:
    """Σ_i cotangent_iᵀ ∂output_i/∂leaf, detached and shaped like ``leaf``; zeros when no
    output depends on it (a ``None`` cotangent is ones, for scalar outputs)."""
    (grad,) = grads_or_zeros(outputs, (leaf,), cotangents, retain_graph)
    return grad


def grads_or_zeros(
    outputs: list[Tensor],
    leaves: tuple[Tensor, ...],
    cotangents: list[Tensor | None],
    retain_graph: bool = False,
) -> tuple[Tensor, ...]:
    """:func:`grad_or_zeros` for several leaves at once, from one backward pass."""
    pairs = [(out, cot) for out, cot in zip(outputs, cotangents, strict=True) if out.requires_grad]
    if not pairs:
        return tuple(torch.zeros_like(leaf) for leaf in leaves)
    grads = torch.autograd.grad(
        [out for out, _ in pairs],
        leaves,
        [cot for _, cot in pairs],
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return tuple(
        torch.zeros_like(leaf) if grad is None else grad.detach()
        for leaf, grad in zip(leaves, grads, strict=True)
    )
