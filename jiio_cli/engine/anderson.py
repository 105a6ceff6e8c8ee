"""Batched fixed-point solvers: Anderson acceleration and damped (Picard) iteration.

Both solve ``s = g(s)`` for a batch of independent problems stacked as rows of a
(B, N) state. They share one loop with these guarantees:

* **Per-sample convergence.** Sample b stops when every entry of its residual vector
  ``r_b = residual_fn(s, g(s))[b]`` is ≤ ``tol``. From then on its state is frozen:
  later iterations (which still evaluate g on the whole batch, keeping shapes static)
  never change it, so its result is bit-identical to a run that stopped right there.
* **No host synchronisation in the loop** except one ``any()`` every ``check_every``
  iterations to stop early; masks, best-iterate tracking and the Anderson weights are
  all computed on the device.
* **Failure is data, not an exception.** A sample whose map returns NaN/Inf is marked
  ``failed``, frozen at its best finite iterate and reported as not converged.
* **Best iterate.** Each sample returns the evaluated iterate with the smallest
  max-residual, together with that residual (for a converged sample: the point where
  it converged).

Anderson (Type II, Walker & Ni 2011) keeps the last m pairs (g(s_i), g(s_i) − s_i) in
preallocated (B, m, N) buffers and the Gram matrix H = G Gᵀ (B, m, m), of which one row
and column are updated per iteration (one pass over the history). The mixing weights solve

    min_α ‖Σ_i α_i G_i‖² + λ̃ ‖α‖²   subject to   Σ_i α_i = 1,

i.e. α = (H + λ̃ I)⁻¹ 1 / 1ᵀ(H + λ̃ I)⁻¹ 1, with λ̃ = λ · mean(diag H) so that the
regularisation is scale-free and always applied. The (m×m) SPD system is solved by a
batched Cholesky in float64; a sample whose factorisation fails takes the plain step
g(s_k) for that iteration instead (no retries). The next iterate is
``s = Σ_i α_i (β g(s_i) + (1 − β) s_i)``.

Safeguard: Anderson can stagnate on nonlinear maps (the mixed point stops improving).
A sample whose best residual has not improved for ``patience`` iterations, or whose
residual jumps above ``blowup`` × its best, clears its history and takes m plain steps
g(s) before accelerating again; all of it per sample and on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "FixedPointResult",
    "SolverConfig",
    "anderson_weights",
    "fixed_point_solve",
    "relative_residual",
]

MapFn = Callable[[Tensor, int], Tensor]
ResidualFn = Callable[[Tensor, Tensor], Tensor]

RESIDUAL_FLOOR = 1e-6
"""RMS floor in relative residuals, so blocks that converge to zero still converge."""


@dataclass(frozen=True)
class SolverConfig:
    """Settings of a fixed-point solve.

    Attributes:
        method: ``"anderson"`` or ``"picard"`` (damped iteration s ← s + β(g(s) − s)).
        memory: Anderson history length m.
        tol: per-sample stopping tolerance on every residual entry.
        max_iter: cap on map evaluations.
        lam: relative Tikhonov regularisation λ of the Anderson least squares.
        beta: Anderson mixing / Picard damping β ∈ (0, 1].
        check_every: iterations between host-side checks for early stopping.
        restart_at: iterations at which the Anderson history is cleared (e.g. where the
            map itself changes, such as a step-size switch).
        patience: safeguard: a sample whose best residual has not improved for this many
            iterations clears its history and takes m plain steps (default 2m; 0 disables).
        blowup: safeguard: a sample whose residual exceeds ``blowup`` × its best one is
            restarted the same way at once.
        keep: which iterate a sample returns: ``"best"`` (lowest residual; the iterate of
            convergence when it converged) or ``"last"`` (the last one evaluated: for maps
            that keep making progress without their residual falling, such as attacks
            whose normalised steps never shrink).
    """

    method: Literal["anderson", "picard"] = "anderson"
    memory: int = 5
    tol: float = 1e-4
    max_iter: int = 100
    lam: float = 1e-4
    beta: float = 1.0
    check_every: int = 5
    restart_at: tuple[int, ...] = field(default=())
    patience: int | None = None
    blowup: float = 1e3
    keep: Literal["best", "last"] = "best"

    def __post_init__(self) -> None:
        if self.method not in ("anderson", "picard"):
            raise ValueError(f"unknown solver method {self.method!r}")
        if self.keep not in ("best", "last"):
            raise ValueError(f"unknown keep rule {self.keep!r}: expected 'best' or 'last'")
        if self.memory < 1 or self.max_iter < 1 or self.check_every < 1:
            raise ValueError("memory, max_iter and check_every must be at least 1")
        if not (self.tol > 0 and self.lam >= 0 and 0 < self.beta <= 1):
            raise ValueError("need tol > 0, lam >= 0 and 0 < beta <= 1")


@dataclass
class FixedPointResult:
    """Outcome of :func:`fixed_point_solve` for a batch of B samples.

    Attributes:
        state: the kept iterate per sample (see ``SolverConfig.keep``), (B, N).
        residual: residual vector measured at ``state``, (B, K).
        iterations: map evaluations each sample took while still active, (B,) int64.
        converged: every residual entry ≤ tol, (B,) bool.
        failed: the map produced NaN/Inf for the sample, (B,) bool.
        steps: map evaluations of the whole batch (the cost actually paid).
    """

    state: Tensor
    residual: Tensor
    iterations: Tensor
    converged: Tensor
    failed: Tensor
    steps: int


def relative_residual(s: Tensor, gs: Tensor) -> Tensor:
    """‖g(s) − s‖ / (‖g(s)‖ + 1e-6·√N) per sample, shape (B, 1)."""
    floor = RESIDUAL_FLOOR * s.shape[1] ** 0.5
    return ((gs - s).norm(dim=1) / (gs.norm(dim=1) + floor)).unsqueeze(1)


def anderson_weights(gram: Tensor, valid: Tensor, fallback: Tensor, lam: float) -> Tensor:
    """Mixing weights α (B, m) from the history Gram matrix.

    Args:
        gram: H = G Gᵀ of shape (B, m, m).
        valid: (B, m) bool, which history slots hold pairs of each sample's current run
            (at least the newest one).
        fallback: (m,) weights used where the solve fails, normally the one-hot vector of
            the newest slot (a plain step).
        lam: relative regularisation λ.

    Returns:
        α with Σ α = 1 over each sample's valid slots and 0 elsewhere, in ``gram``'s dtype.
    """
    pair = valid[:, :, None] & valid[:, None, :]
    h = gram * pair
    diag = torch.diagonal(h, dim1=1, dim2=2)
    n_valid = valid.sum(dim=1, keepdim=True).clamp_min(1)
    reg = lam * diag.sum(dim=1, keepdim=True) / n_valid
    # Unfilled slots get an identity row and a zero right-hand side, hence α = 0 there.
    h = h + torch.diag_embed(torch.where(valid, reg, torch.ones_like(reg)))
    rhs = valid.to(gram.dtype).unsqueeze(-1)
    chol, info = torch.linalg.cholesky_ex(h)
    y = torch.cholesky_solve(rhs, chol).squeeze(-1)
    alpha = y / y.sum(dim=1, keepdim=True)
    ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
    return torch.where(ok[:, None], alpha, fallback)


def fixed_point_solve(
    fn: MapFn,
    s0: Tensor,
    config: SolverConfig,
    residual_fn: ResidualFn | None = None,
) -> FixedPointResult:
    """Solve s = g(s) for each row of a batch.

    Args:
        fn: the map ``g(s, k)`` taking the (B, N) state and the iteration index k
            (so maps with iteration-dependent step sizes can be solved), returning (B, N).
            It is called without autograd recording on the solver's own tensors.
        s0: initial state (B, N).
        config: solver settings.
        residual_fn: ``(s, g(s)) -> (B, K)`` residuals; sample b converges when all K
            entries are ≤ tol. Defaults to :func:`relative_residual`.

    Returns:
        A :class:`FixedPointResult`.
    """
    residual_fn = residual_fn or relative_residual
    batch, n = s0.shape
    device = s0.device
    anderson = config.method == "anderson"
    m = config.memory
    keep_last = config.keep == "last"

    s = s0.detach().clone()
    best_s = s.clone()
    best_score = torch.full((batch,), float("inf"), device=device)
    best_res: Tensor | None = None
    active = torch.ones(batch, dtype=torch.bool, device=device)
    converged = torch.zeros_like(active)
    failed = torch.zeros_like(active)
    iterations = torch.zeros(batch, dtype=torch.long, device=device)
    if anderson:
        hist_f = s0.new_zeros(batch, m, n)
        hist_g = s0.new_zeros(batch, m, n)
        gram = torch.zeros(batch, m, m, dtype=torch.float64, device=device)
        one_hot = torch.eye(m, dtype=torch.float64, device=device)
        valid = torch.zeros(batch, m, dtype=torch.bool, device=device)
        stale = torch.zeros(batch, dtype=torch.long, device=device)
        plain_left = torch.zeros(batch, dtype=torch.long, device=device)
    patience = 2 * m if config.patience is None else config.patience
    slot, steps = 0, 0
    restarts = set(config.restart_at)

    with torch.no_grad():
        for k in range(config.max_iter):
            if anderson and k in restarts:
                valid.zero_()
            gs = fn(s, k)
            steps += 1
            res = residual_fn(s, gs)
            if best_res is None:
                best_res = torch.full_like(res, float("inf"))
            finite = torch.isfinite(gs).all(dim=1) & torch.isfinite(res).all(dim=1)
            score = torch.where(finite, res.amax(dim=1), torch.inf)
            improved = active & (score < best_score)
            kept = active if keep_last else improved
            best_s = torch.where(kept[:, None], s, best_s)
            best_res = torch.where(kept[:, None], res, best_res)
            best_score = torch.where(improved, score, best_score)
            iterations += active
            done = active & finite & (score <= config.tol)
            converged |= done
            failed |= active & ~finite
            active = active & ~done & finite

            if anderson:
                g = gs - s
                hist_f[:, slot].copy_(gs)
                hist_g[:, slot].copy_(g)
                valid[:, slot] = True
                row = torch.einsum("bmn,bn->bm", hist_g, g).to(torch.float64)
                gram[:, slot, :] = row
                gram[:, :, slot] = row
                # Safeguard: a stagnating or blowing-up sample forgets its history and
                # takes plain steps g(s) for a while before accelerating again.
                stale = torch.where(improved, 0, stale + 1)
                restart = (stale >= patience) if patience > 0 else torch.zeros_like(active)
                restart = restart | (score > config.blowup * best_score)
                stale = torch.where(restart, 0, stale)
                plain_left = torch.where(restart, m, (plain_left - 1).clamp_min(0))
                valid &= (plain_left == 0)[:, None]
                valid[:, slot] = True
                alpha = anderson_weights(gram, valid, one_hot[slot], config.lam).to(s.dtype)
                s_next = torch.einsum("bm,bmn->bn", alpha, hist_f)
                if config.beta != 1.0:
                    mixed_g = torch.einsum("bm,bmn->bn", alpha, hist_g)
                    s_next = s_next - (1.0 - config.beta) * mixed_g
                slot = (slot + 1) % m
            else:
                s_next = s + config.beta * (gs - s)
            s = torch.where(active[:, None], s_next, s)

            if (k + 1) % config.check_every == 0 and not bool(active.any()):
                break

    assert best_res is not None
    return FixedPointResult(
        state=best_s,
        residual=best_res,
        iterations=iterations,
        converged=converged,
        failed=failed,
        steps=steps,
    )
