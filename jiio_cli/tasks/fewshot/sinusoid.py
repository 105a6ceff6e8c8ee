"""Few-shot sinusoid regression with a FiLM-conditioned DEQ: adaptation and meta-loss.

A task has K support points (t_k, y_k) and Q query points. The model
(:class:`~jiio_cli.models.FiLMRegressor`) sees each task as one row of points sharing a
context v ∈ ℝᴰ (PAPER.md §5). Adaptation fits v on the support set:

    v* = argmin_v  J(v) = (1/(K·O)) Σ_k ‖ŷ_k(v) − y_k‖² + (λ/2)‖v‖²,
    ŷ_k(v) = h(z*_k, v),   z*_k = f(z*_k, v; t_k)

by JIIO (or, as the baseline, by Adam on v with a full forward and adjoint solve per
step); JIIO rows that diverge are solved again with a smaller step (see
:data:`DIVERGED_RESIDUAL`). Queries are then predicted by solving their DEQ at v*.

Meta-training minimises L_q = MSE(query) at v*, averaged over a batch of tasks. Its
θ-gradient has two parts:

* **at fixed v*** — by implicit differentiation of the query fixed points: with the
  adjoint u_q = J_zᵀ u_q + ∂L_q/∂z*, dL_q/dθ = ∂L_q/∂θ + u_qᵀ ∂f/∂θ (one adjoint solve);
* **through v*(θ)** (``hypergradient=True``) — by the implicit function theorem on the
  stationarity condition ∇_v J(v*; θ) = 0: dv*/dθ = −H⁻¹ ∂(∇_v J)/∂θ. Both H and the
  mixed derivative are taken in the Gauss–Newton form of the least-squares J,

      H ≈ (2/(K·O)) Σ_{k,o} a_{ko} a_{koᵀ} + λ I,   ∂(∇_v J)/∂θ ≈ (2/(K·O)) Σ a_{ko} (∂ŷ_{ko}/∂θ)ᵀ,

  with a_{ko} = dŷ_{ko}/dv (D,) the total derivative through the support fixed point.
  They drop only the terms weighted by the support residuals ŷ − y, so the
  hypergradient is exact where the support is fitted exactly. With c = H⁻¹ ∇_v L_q
  (a D×D solve per task), the contribution is Σ_{k,o} w_{ko} dŷ_{ko}/dθ with
  w_{ko} = −(2/(K·O)) a_{ko}·c. Because f acts on each point separately, a_{ko} comes
  from one batched adjoint solve per output (u_{ko} = J_zᵀ u_{ko} + ∂ŷ_{ko}/∂z) and one
  VJP, and the same u_{ko} then give dŷ_{ko}/dθ: no further solve. The D×D system is
  small because the context is; this is what the glyph task's Neumann step η
  approximates by H⁻¹ ≈ η I. It needs v* to be a stationary point: with rows that
  diverged left in (before the safeguard above) it made training worse, not better.

Both parts are assembled into one scalar surrogate whose value is L_q and whose
θ-gradient is the meta-gradient, so the training loop just calls ``backward()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from jiio_cli.engine import (
    InputOptResult,
    InputProblem,
    JIIOConfig,
    NaiveConfig,
    SolverConfig,
    adjoint_solve,
    jacobian_penalty,
    naive_solve,
)
from jiio_cli.engine.backtracking import Backtracking, jiio_solve_backtracking
from jiio_cli.engine.problem import Cell, Objective
from jiio_cli.models import FiLMRegressor
from jiio_cli.tasks.fewshot.context_solve import solve_at_contexts
from jiio_cli.tasks.fewshot.inner_solvers import jiio_inner_settings, naive_inner_settings

__all__ = [
    "DIVERGED_RESIDUAL",
    "RETRIES",
    "RegressionAdaptConfig",
    "RegressionMetaLoss",
    "adapt_context",
    "meta_loss",
    "prediction_jacobian",
    "predictions",
    "query_states",
    "support_objective",
    "support_problem",
]


@dataclass(frozen=True)
class RegressionAdaptConfig:
    """How the context v is fitted on a support set.

    Attributes:
        method: ``jiio`` or ``naive`` (Adam on v, full solves per step).
        penalty: λ of the penalty (λ/2)‖v‖².
        jiio: settings of :func:`~jiio_cli.engine.jiio_solve`.
        naive: settings of :func:`~jiio_cli.engine.naive_solve`.
        forward: solver of the query fixed points at v*.
        adjoint: solver of the adjoint systems of the meta-gradient.
    """

    method: Literal["jiio", "naive"] = "jiio"
    penalty: float = 0.01
    jiio: JIIOConfig = field(default_factory=lambda: jiio_inner_settings(0.3, 0.15, 10, 30))
    naive: NaiveConfig = field(default_factory=lambda: naive_inner_settings(10, 0.1))
    forward: SolverConfig = field(
        default_factory=lambda: SolverConfig(memory=5, max_iter=40, tol=1e-4)
    )
    adjoint: SolverConfig = field(
        default_factory=lambda: SolverConfig(memory=5, max_iter=40, tol=1e-5)
    )


def support_objective(model: FiLMRegressor, targets: Tensor, penalty: float) -> Objective:
    """ℓ(z, v) = mean_{k,o} (ŷ_{ko} − y_{ko})² + (λ/2)‖v‖² per task row, (B,).

    Args:
        model: the meta-model (its read-out gives ŷ = h(z, v)).
        targets: (B, K, O) support targets y.
        penalty: λ.
    """

    def objective(z: Tensor, v: Tensor) -> Tensor:
        error = (model.predict(z, v) - targets).pow(2).flatten(1).mean(dim=1)
        return error + 0.5 * penalty * v.pow(2).sum(dim=1)

    return objective


def adapt_context(
    model: FiLMRegressor,
    t: Tensor,
    y: Tensor,
    settings: RegressionAdaptConfig,
    method: Literal["jiio", "naive"] | None = None,
) -> InputOptResult:
    """Fit v on each task's support points; the result's ``x`` is v* (B, D).

    JIIO runs with a backtracking safeguard (see :data:`DIVERGED_RESIDUAL`): the rows
    whose solve diverged are solved again from the start with α_x times
    :data:`BACKTRACK`, up to :data:`RETRIES` times; their cost counts in the result's
    ``f_evals`` and ``vjps``.

    Args:
        model: the meta-model.
        t: (B, K, d) support inputs; y: (B, K, O) their targets.
        settings: step sizes, budgets and λ.
        method: overrides ``settings.method``.
    """
    if (method or settings.method) == "jiio":

        def problem_for(rows: Tensor | None) -> InputProblem:
            if rows is None:
                return support_problem(model, t, y, settings.penalty)
            return support_problem(model, t[rows], y[rows], settings.penalty)

        return jiio_solve_backtracking(problem_for, settings.jiio, SUPPORT_BACKTRACKING)
    return naive_solve(support_problem(model, t, y, settings.penalty), settings.naive)


DIVERGED_RESIDUAL = 0.1
"""Relative x residual above which a JIIO row counts as diverged rather than unconverged.

The x step α_x is fixed, while meta-training keeps raising the curvature of the support
problem in v (larger context maps shrink v* less under the penalty), so a trained model
sits near the edge of the range of α_x that JIIO's Anderson iteration tolerates (the
plain damped iteration already diverges at the trained α_x = 0.3): about 1 task in 100
then diverges (v* of norm in the hundreds, query MSE in the thousands, or the start
point kept as the best iterate) where the others converge to residuals near 10⁻³. A
fixed-step method has no defence against that; a smaller α_x for the rows concerned is
the usual backtracking one. Measured on the shipped model (1,000 five-shot tasks): the
4 rows still diverged at α_x = 0.3, 0.15 and 0.075 all converged at 0.03, hence the
factor ¼ of :data:`BACKTRACK`."""

RETRIES = 2
"""How many times a diverged row is solved again, each time with α_x times :data:`BACKTRACK`."""

BACKTRACK = 0.25
"""Factor of α_x from one attempt at a diverged row to the next (0.3 → 0.075 → 0.019)."""

SUPPORT_BACKTRACKING = Backtracking(
    retries=RETRIES, shrink=BACKTRACK, diverged_residual=DIVERGED_RESIDUAL
)
"""The engine's backtracking safeguard with the three settings above."""


def support_problem(model: FiLMRegressor, t: Tensor, y: Tensor, penalty: float) -> InputProblem:
    """The support problem of the tasks (t, y) from v = 0, z = 0 (cell bound without grad)."""
    with torch.no_grad():
        model.bind(t)
        try:
            cell = model.context_cell()
            z0 = model.init_state(t.shape[0])
        finally:
            model.unbind()
    return InputProblem(
        cell,
        support_objective(model, y, penalty),
        z0=z0,
        x0=t.new_zeros(t.shape[0], model.context_size),
    )


def query_states(model: FiLMRegressor, t: Tensor, context: Tensor, solver: SolverConfig) -> Tensor:
    """Fixed points z* (B, m, H) of the points t (B, m, d) at contexts (B, D). No autograd."""
    return solve_at_contexts(model, t, context, solver).z


def predictions(model: FiLMRegressor, t: Tensor, context: Tensor, solver: SolverConfig) -> Tensor:
    """Predictions ŷ (B, m, O) at the points t (B, m, d) under contexts (B, D). No autograd."""
    with torch.no_grad():
        return model.predict(query_states(model, t, context, solver), context)


def _per_point(t: Tensor, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each point as its own row: t (B·n, 1, d), z (B·n, 1, H), v (B·n, D) repeated."""
    n = t.shape[1]
    return t.flatten(0, 1)[:, None], z.flatten(0, 1)[:, None], v.repeat_interleave(n, dim=0)


def prediction_jacobian(
    model: FiLMRegressor, t: Tensor, z: Tensor, v: Tensor, solver: SolverConfig
) -> tuple[Tensor, Tensor]:
    """Total derivatives a = dŷ/dv through the fixed points, and the adjoints that give them.

    For each point k and output o, u_{ko} solves u = J_zᵀ u + ∂ŷ_{ko}/∂z at z*_k and
    a_{ko} = ∂ŷ_{ko}/∂v + u_{ko}ᵀ ∂f_k/∂v. Points are independent under f, so one
    batched adjoint solve per output serves all of them.

    Args:
        model: the meta-model.
        t: (B, n, d) points; z: (B, n, H) their fixed points at v; v: (B, D).
        solver: the adjoint solver.

    Returns:
        (a (B, n, O, D), u (B, n, O, H)), detached.
    """
    batch, n = t.shape[:2]
    outputs = model.config.output_dim
    tp, zp, vp = _per_point(t.detach(), z.detach(), v.detach())
    with torch.no_grad():
        model.bind(tp)
        cell = model.context_cell()
        model.unbind()
    jac, adj = [], []
    with torch.enable_grad():
        zr = zp.clone().requires_grad_(True)
        vr = vp.clone().requires_grad_(True)
        fz = cell(zr, vr)
        y = model.predict(zr, vr)  # (B·n, 1, O)
        for o in range(outputs):
            dz, dv = torch.autograd.grad(y[..., o].sum(), (zr, vr), retain_graph=True)
            u = adjoint_solve(cell, zp, vp, dz, None, solver).mu
            (jv,) = torch.autograd.grad(fz, vr, u, retain_graph=True)
            jac.append(dv + jv)
            adj.append(u[:, 0])
    a = torch.stack(jac, dim=1).view(batch, n, outputs, -1)
    u_all = torch.stack(adj, dim=1).view(batch, n, outputs, -1)
    return a.detach(), u_all.detach()


@dataclass
class RegressionMetaLoss:
    """One meta-training step's loss and what it measured.

    Attributes:
        loss: surrogate whose value is the query MSE plus the Jacobian term and whose
            θ-gradient is the meta-gradient (see the module docstring).
        query_mse: the query MSE alone (float).
        inner: the support solve.
    """

    loss: Tensor
    query_mse: float
    inner: InputOptResult


def _bound_cell(model: FiLMRegressor, t: Tensor) -> Cell:
    """f(z, v) of the points t with the injection bound *with* autograd (θ-live)."""
    model.bind(t)
    try:
        return model.context_cell()
    finally:
        model.unbind()


def meta_loss(
    model: FiLMRegressor,
    support_t: Tensor,
    support_y: Tensor,
    query_t: Tensor,
    query_y: Tensor,
    settings: RegressionAdaptConfig,
    *,
    hypergradient: bool = True,
    jacobian_weight: float = 0.0,
    generator: torch.Generator | None = None,
    inner: InputOptResult | None = None,
) -> RegressionMetaLoss:
    """The outer loss of one batch of tasks (see the module docstring for the gradient).

    Args:
        model: the meta-model being trained.
        support_t, support_y, query_t, query_y: (B, K, d), (B, K, O), (B, Q, d), (B, Q, O).
        settings: the inner solve, λ and the adjoint solver.
        hypergradient: include the Gauss–Newton path through v*(θ).
        jacobian_weight: weight of the Hutchinson estimate of ‖∂f/∂z‖²_F at the query
            fixed points.
        generator: source of the Hutchinson probes.
        inner: a support solve already done (default: solve it here).
    """
    if inner is None:
        inner = adapt_context(model, support_t, support_y, settings)
    v = inner.x.detach()
    # --- query part at fixed v*: one adjoint solve, u_q = J_zᵀ u_q + ∂L_q/∂z* ---
    z_q = query_states(model, query_t, v, settings.forward)
    cell_q = _bound_cell(model, query_t)
    with torch.enable_grad():
        zr = z_q.clone().requires_grad_(True)
        vr = v.clone().requires_grad_(True)
        query_mse = (model.predict(zr, vr) - query_y).pow(2).mean()
        dz, dv_direct = torch.autograd.grad(query_mse, (zr, vr), retain_graph=True)
    u_q = adjoint_solve(cell_q, z_q, v, dz, None, settings.adjoint).mu
    loss = query_mse + (u_q * (cell_q(z_q, v) - z_q)).sum()
    if hypergradient:
        # ∇_v L_q = ∂L_q/∂v + u_qᵀ ∂f/∂v at fixed θ.
        with torch.enable_grad():
            vr = v.clone().requires_grad_(True)
            (dv_implicit,) = torch.autograd.grad(cell_q(z_q.detach(), vr), vr, u_q.detach())
        grad_v = (dv_direct + dv_implicit).detach()
        loss = loss + _hypergradient_surrogate(
            model, support_t, inner.z.detach(), v, grad_v, settings
        )
    if jacobian_weight > 0:
        penalty = jacobian_penalty(cell_q, z_q, v, generator=generator).mean()
        loss = loss + jacobian_weight * penalty
    return RegressionMetaLoss(loss, float(query_mse.detach()), inner)


def _hypergradient_surrogate(
    model: FiLMRegressor,
    support_t: Tensor,
    z_s: Tensor,
    v: Tensor,
    grad_v: Tensor,
    settings: RegressionAdaptConfig,
) -> Tensor:
    """Zero-valued term whose θ-gradient is (∇_v L_q)ᵀ dv*/dθ (Gauss–Newton IFT).

    Returns Σ_{b,k,o} w_{bko} (ŷ_{bko}(θ) + u_{bko}ᵀ (f_k(z*_k, v*; θ) − z*_k)) − its value,
    with w = −(2/(K·O)) a·H⁻¹∇_v L_q and everything but θ held constant; the u-term makes
    its θ-gradient the total derivative dŷ/dθ through the support fixed points.
    """
    batch, n = support_t.shape[:2]
    outputs = model.config.output_dim
    a, u = prediction_jacobian(model, support_t, z_s, v, settings.adjoint)
    scale = 2.0 / (n * outputs)
    flat = a.flatten(1, 2)  # (B, n·O, D)
    eye = torch.eye(v.shape[1], dtype=v.dtype, device=v.device)
    hessian = scale * flat.transpose(1, 2) @ flat + settings.penalty * eye
    c = torch.linalg.solve(hessian, grad_v)  # (B, D)
    weights = -scale * (a @ c[:, None, :, None]).squeeze(-1)  # (B, n, O)
    # The points as rows of one token each, so that u_{ko} pairs with f_k alone.
    tp, zp, vp = _per_point(support_t, z_s, v)
    cell = _bound_cell(model, tp)
    y = model.predict(zp, vp).view(batch, n, outputs)
    residual = (cell(zp, vp) - zp).view(batch, n, 1, -1)  # (B, n, 1, H), ≈ 0 in value
    total = (weights * (y + (u * residual).sum(-1))).sum()
    return total - total.detach()
