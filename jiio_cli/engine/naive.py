"""The naive inner/outer baselines: first-order methods on x with full solves per step.

Each outer step k:

1. forward solve z_k = f(z_k, x_k) (Anderson, from zeros or warm-started),
2. adjoint solve μ_k = J_zᵀ μ_k + ∇_z ℓ(z_k, x_k),
3. gradient ∇_x L(x_k) = ∇_x ℓ + J_xᵀ μ_k (one more VJP),
4. update x with gradient descent, Adam or PGD (normalised / sign steps per the
   problem's step rule), then project onto 𝒳.

Samples whose x residual falls below the tolerance stop moving (their solves still run
batched). The result has the same type and statistics as ``jiio_solve``, and also counts
the inner solves that ended above their tolerance (``inner_unconverged``): with a low
iteration cap the "full solves" of the method are truncated ones, and the count says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from jiio_cli.engine.anderson import SolverConfig
from jiio_cli.engine.constraints import apply_step_rule
from jiio_cli.engine.fixed_point import SolvedPoint, result_at, solve_at
from jiio_cli.engine.jiio import x_step_residual
from jiio_cli.engine.problem import InputOptResult, InputProblem

__all__ = ["NaiveConfig", "inner_solves_converged", "naive_solve"]


@dataclass(frozen=True)
class NaiveConfig:
    """Settings of :func:`naive_solve`.

    Attributes:
        method: ``gd`` (plain steps), ``adam`` or ``pgd`` (the problem's step rule,
            L2-normalised when that rule is ``plain``).
        steps: number of outer steps.
        lr: step size (Adam's learning rate).
        lr_decay: ``constant`` or ``cosine`` (decays to 0 over ``steps``).
        betas, adam_eps: Adam's moment decay rates and denominator constant.
        tol: per-sample stop once the x residual (one projected step at the current
            step size) is ≤ tol and the inner solves converged; 0 never stops early.
        forward, adjoint: settings of the inner solves.
        warm_start: start each inner solve from the previous step's solution. Off by
            default: the paper's naive method solves from scratch each step.
    """

    method: Literal["gd", "adam", "pgd"] = "adam"
    steps: int = 50
    lr: float = 0.01
    lr_decay: Literal["constant", "cosine"] = "constant"
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    tol: float = 0.0
    forward: SolverConfig = field(default_factory=lambda: SolverConfig(memory=5, max_iter=50))
    adjoint: SolverConfig = field(default_factory=lambda: SolverConfig(memory=5, max_iter=50))
    warm_start: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("gd", "adam", "pgd"):
            raise ValueError(f"unknown naive method {self.method!r}")
        if self.steps < 1 or self.lr <= 0:
            raise ValueError("need steps >= 1 and lr > 0")

    def lr_at(self, k: int) -> float:
        if self.lr_decay == "cosine":
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * k / self.steps))
        return self.lr


@dataclass
class _Counts:
    """Per-sample work of the outer loop (B,) while each sample was active, and the
    batch's cell evaluations."""

    f_evals: Tensor
    vjps: Tensor
    inner_unconverged: Tensor
    batch_f_evals: int = 0

    @classmethod
    def zeros(cls, batch: int, device: torch.device) -> _Counts:
        new = torch.zeros(batch, dtype=torch.long, device=device)
        return cls(new, torch.zeros_like(new), torch.zeros_like(new))

    def add(self, point: SolvedPoint, active: Tensor) -> None:
        self.f_evals += torch.where(active, point.f_evals, 0)
        self.vjps += torch.where(active, point.vjps, 0)
        stopped_short = (~point.forward.converged).long() + (~point.adjoint.converged).long()
        self.inner_unconverged += torch.where(active, stopped_short, 0)
        self.batch_f_evals += point.batch_f_evals


@dataclass
class _AdamMoments:
    """Adam's first and second moments m₁, m₂ of the gradient in x, shaped like x."""

    m1: Tensor
    m2: Tensor

    def direction(
        self, config: NaiveConfig, gx: Tensor, moving: Tensor, steps_taken: Tensor
    ) -> Tensor:
        """Update the moments of the moving samples and return the bias-corrected step
        m̂₁ / (√m̂₂ + ε), with t = steps_taken + 1 per sample (``moving``, ``steps_taken``
        broadcast against x)."""
        b1, b2 = config.betas
        self.m1 = torch.where(moving, b1 * self.m1 + (1 - b1) * gx, self.m1)
        self.m2 = torch.where(moving, b2 * self.m2 + (1 - b2) * gx * gx, self.m2)
        t = steps_taken + 1
        return (self.m1 / (1 - b1**t)) / ((self.m2 / (1 - b2**t)).sqrt() + config.adam_eps)


def naive_solve(problem: InputProblem, config: NaiveConfig | None = None) -> InputOptResult:
    """Optimise x by a first-order method with a forward and an adjoint solve per step.

    Args:
        problem: the batch of problems.
        config: method and inner-solver settings.

    Returns:
        An :class:`InputOptResult` at the final x (z, μ solved there); ``iterations``
        counts outer steps taken by each sample.
    """
    config = config or NaiveConfig()
    cell, objective, constraint = problem.cell, problem.objective, problem.constraint
    rule = problem.step_rule
    if config.method == "pgd" and rule == "plain":
        rule = "l2"
    batch = problem.batch_size
    device = problem.z0.device

    x = constraint.project(problem.x0.detach())
    z_start = problem.z0.detach()
    mu_prev: Tensor | None = None
    moments = _AdamMoments(torch.zeros_like(x), torch.zeros_like(x))
    active = torch.ones(batch, dtype=torch.bool, device=device)
    iterations = torch.zeros(batch, dtype=torch.long, device=device)
    counts = _Counts.zeros(batch, device)
    trace = torch.zeros(config.steps + 1, device=device, dtype=x.dtype)
    mask_shape = (batch, *([1] * (x.ndim - 1)))

    with torch.no_grad():
        for k in range(config.steps + 1):
            point = solve_at(cell, objective, x, z_start, mu_prev, config.forward, config.adjoint)
            gx = point.grad_x
            trace[k] = point.objective.mean()
            counts.add(point, active)
            if config.warm_start:
                z_start, mu_prev = point.z, point.mu
            if k == config.steps:
                break
            lr = config.lr_at(k)
            inner_ok = point.forward.converged & point.adjoint.converged
            if config.tol > 0:
                res_x = x_step_residual(problem, x, gx, lr)
                active = active & ~((res_x <= config.tol) & inner_ok)
            moving = active.view(mask_shape)
            if config.method == "adam":
                steps_taken = iterations.to(x.dtype).view(mask_shape)
                direction = moments.direction(config, gx, moving, steps_taken)
            elif config.method == "gd":
                direction = gx
            else:
                direction = apply_step_rule(gx, rule)
            x = torch.where(moving, constraint.project(x - lr * direction), x)
            iterations += active
    return _naive_result(problem, config, x, gx, point, iterations, counts, trace)


def _naive_result(
    problem: InputProblem,
    config: NaiveConfig,
    x: Tensor,
    gx: Tensor,
    point: SolvedPoint,
    iterations: Tensor,
    counts: _Counts,
    trace: Tensor,
) -> InputOptResult:
    """The result at the final x: its residuals, verdicts and the loop's counts."""
    # Judged at the nominal step size: a decayed final lr would make any x look stationary.
    res_x = x_step_residual(problem, x, gx, config.lr)
    tol = max(config.forward.tol, config.adjoint.tol)
    return result_at(
        point,
        x,
        res_x,
        tol=tol,
        x_tol=max(config.tol, tol),
        iterations=iterations,
        f_evals=counts.f_evals,
        vjps=counts.vjps,
        batch_f_evals=counts.batch_f_evals,
        trace=trace,
        method=f"naive-{config.method}",
        inner_unconverged=counts.inner_unconverged,
    )


def inner_solves_converged(naive: InputOptResult) -> float:
    """The share of the naive method's inner solves (a forward and an adjoint solve per
    step and sample, while the sample was active) that reached their tolerance."""
    counted = naive.inner_unconverged
    if counted is None:
        raise ValueError("not a naive method's result: it counts no inner solves")
    solves = 2 * (naive.iterations + 1)
    return 1.0 - float(counted.sum()) / float(solves.sum())
