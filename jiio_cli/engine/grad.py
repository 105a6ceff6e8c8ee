"""Parameter gradients through DEQ solutions, and the Jacobian regulariser.

Three tools, all returning ordinary autograd tensors so a training step just calls
``loss.backward()``:

* :func:`optimal_value_surrogate` — when the training loss *is* the inner objective,
  L*(θ) = ℓ(z*, x*) at the JIIO optimum. By the envelope theorem x* contributes nothing
  to first order, and μ* is already the DEQ adjoint, so

      dL*/dθ = ∂ℓ/∂θ (z*, x*) + μ*ᵀ ∂f/∂θ (z*, x*)

  — one f evaluation and one VJP, no backward solve.
* :func:`implicit_fixed_point` — z* as a differentiable function of x and θ for any other
  loss. Its backward solves u = J_zᵀ u + ∂L/∂z* (warm-started, e.g. from a rescaled μ*)
  and returns uᵀ ∂f/∂(x, θ).
* :func:`jacobian_penalty` — Hutchinson's estimate of ‖∂f/∂z‖²_F / dim(z).
"""

from __future__ import annotations

import torch
from torch import Tensor

from jiio_cli.engine.anderson import SolverConfig
from jiio_cli.engine.fixed_point import adjoint_solve
from jiio_cli.engine.problem import Cell, Objective

__all__ = ["implicit_fixed_point", "jacobian_penalty", "optimal_value_surrogate"]


def _batch_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.reshape(a.shape[0], -1) * b.reshape(b.shape[0], -1)).sum(dim=1)


def optimal_value_surrogate(
    cell: Cell, objective: Objective, z: Tensor, x: Tensor, mu: Tensor
) -> Tensor:
    """Per-sample L*(θ) whose θ-gradient is the exact optimal-value gradient.

    Returns ℓ(z*, x*) + ⟨μ*, f(z*, x*) − z*⟩ (B,), with z*, x*, μ* treated as
    constants. At a fixed point the second term is zero in value; its gradient is
    μ*ᵀ ∂f/∂θ. Requires μ* to be the adjoint at (z*, x*) (as ``jiio_solve`` returns).
    """
    z, x, mu = z.detach(), x.detach(), mu.detach()
    return objective(z, x) + _batch_dot(mu, cell(z, x) - z)


def implicit_fixed_point(
    cell: Cell,
    z_star: Tensor,
    x: Tensor,
    config: SolverConfig | None = None,
    warm_start: Tensor | None = None,
) -> Tensor:
    """Attach implicit-function gradients to a fixed point found without autograd.

    Forward: returns f(z*, x) (equal to z* up to the solver tolerance), differentiable
    w.r.t. x and the cell's parameters. Backward: for an incoming gradient v = ∂L/∂z*
    it solves u = J_zᵀ u + v and propagates u through f, giving
    ∂L/∂θ = uᵀ ∂f/∂θ and ∂L/∂x = uᵀ ∂f/∂x (the implicit function theorem).

    Args:
        cell: the DEQ map.
        z_star: fixed point (B, *z_shape), e.g. ``jiio_solve(...).z``.
        x: the input, possibly requiring grad.
        config: adjoint solver settings (default: Anderson, tol 1e-6, 100 iterations).
        warm_start: adjoint starting point, e.g. JIIO's μ*. It is rescaled per sample
            by the least-squares factor c = ⟨v, r⟩/⟨r, r⟩ with r = μ* − J_zᵀ μ*, the
            best multiple of μ* for the new right-hand side (one extra VJP).
    """
    config = config or SolverConfig(tol=1e-6, max_iter=100)
    z_star = z_star.detach()
    out = cell(z_star, x)
    if not out.requires_grad:
        return out
    x_const = x.detach()

    def backward_hook(grad: Tensor | None) -> Tensor | None:
        if grad is None:  # an undefined incoming gradient stays undefined
            return None
        with torch.enable_grad():
            zr = z_star.clone().requires_grad_(True)
            fz = cell(zr, x_const)
        start = None
        if warm_start is not None:
            mu = warm_start.detach()
            (jt_mu,) = torch.autograd.grad(fz, zr, mu, retain_graph=True)
            r = mu - jt_mu
            scale = _batch_dot(grad, r) / _batch_dot(r, r).clamp_min(torch.finfo(r.dtype).tiny)
            start = mu * scale.view(-1, *([1] * (mu.ndim - 1)))
        return adjoint_solve(cell, z_star, x_const, grad, start, config).mu

    out.register_hook(backward_hook)
    return out


def jacobian_penalty(
    cell: Cell,
    z: Tensor,
    x: Tensor,
    n_probes: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hutchinson estimate of ‖∂f/∂z‖²_F / dim(z) at (z, x), per sample (B,).

    E_ε‖εᵀ J_z‖² = ‖J_z‖²_F for ε ~ N(0, I); averaged over ``n_probes`` probes. The
    result is differentiable w.r.t. the cell's parameters (``create_graph=True``).
    """
    zr = z.detach().requires_grad_(True)
    fz = cell(zr, x.detach())
    total = z.new_zeros(z.shape[0])
    for _ in range(n_probes):
        # Draw where the generator lives (often the CPU), then move: reproducible anywhere.
        where = generator.device if generator is not None else z.device
        probe = torch.randn(z.shape, generator=generator, device=where, dtype=z.dtype).to(z.device)
        (vjp,) = torch.autograd.grad(fz, zr, probe, create_graph=True)
        total = total + vjp.reshape(z.shape[0], -1).pow(2).sum(dim=1)
    return total / (n_probes * zr[0].numel())
