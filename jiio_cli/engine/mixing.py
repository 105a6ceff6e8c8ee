"""Anderson's mathematics as pure functions: the mixing weights and the mixed iterate.

Notation, per sample of a batch of B: the map g, iterates s_i, images f_i = g(s_i) and
residuals r_i = f_i − s_i (N entries each), the last m of them stacked as the rows of
F, R (m, N). The solver loop (:mod:`jiio_cli.engine.anderson`) keeps F, R and the Gram
matrix H = R Rᵀ in preallocated buffers; the functions here only read them.

**Type-II Anderson (Walker & Ni 2011), the form of a full-precision history.** The
weights solve the constrained, Tikhonov-regularised least squares

    α = argmin_α ‖Σ_i α_i r_i‖² + λ̃ ‖α‖²   subject to   Σ_i α_i = 1,

whose solution is α = y / 1ᵀy with (H + λ̃ I) y = 1 (:func:`anderson_weights`); λ̃ = λ ·
mean(diag H), so the regularisation is scale-free. The next iterate mixes the pairs,

    s⁺ = Σ_i α_i (β f_i + (1 − β) s_i) = αᵀF − (1 − β) αᵀR      (:func:`mixed_iterate`).

**The difference form, the form of a bfloat16 history.** With ΔF_i = f_{i+1} − f_i and
ΔR_i = r_{i+1} − r_i (rows of (m, N) matrices, H = ΔR ΔRᵀ) and the newest pair (f_k, r_k),
the same step in exact arithmetic (m differences are m + 1 iterates) is

    γ = argmin_γ ‖r_k − ΔRᵀγ‖² + λ̃ ‖γ‖²,  i.e.  (H + λ̃ I) γ = ΔR r_k,
    s⁺ = f_k − ΔFᵀγ − (1 − β)(r_k − ΔRᵀγ)

(:func:`anderson_coefficients` and :func:`difference_iterate`).

Only the slots marked ``valid`` (B, m) take part; the others get an identity row and a
zero right-hand side, hence a zero weight. The (m × m) systems are symmetric positive
definite and solved by a batched Cholesky factorisation in float64; where it fails the
step falls back to the plain one, s⁺ = f_k.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "anderson_coefficients",
    "anderson_weights",
    "cholesky_solve_unrolled",
    "difference_iterate",
    "gram_rows",
    "mixed_iterate",
    "regularised_gram",
    "solve_spd",
]


def regularised_gram(gram: Tensor, valid: Tensor, lam: float) -> Tensor:
    """H̃ = H ∘ (v vᵀ) + diag(t), with t_i = λ̃ on valid slots and 1 on the others.

    Args:
        gram: H (B, m, m), symmetric.
        valid: v (B, m) bool, the slots that take part.
        lam: relative regularisation λ; λ̃ = λ · (mean of H_ii over the valid slots).

    Returns:
        H̃ (B, m, m): the valid block of H regularised, an identity on the other slots.
    """
    h = gram * (valid[:, :, None] & valid[:, None, :])
    diag = torch.diagonal(h, dim1=1, dim2=2)
    n_valid = valid.sum(dim=1, keepdim=True).clamp_min(1)
    reg = lam * diag.sum(dim=1, keepdim=True) / n_valid
    return h + torch.diag_embed(torch.where(valid, reg, torch.ones_like(reg)))


def cholesky_solve_unrolled(h: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """Solve h y = rhs for a batch of small SPD matrices with elementwise kernels only.

    A column-by-column Cholesky factorisation h = L Lᵀ and two triangular sweeps, O(m)
    batched kernels for m×m systems and no linear-algebra library call: the solve used
    where a library solve cannot be recorded into a CUDA graph.

    Args:
        h: (B, m, m) symmetric positive definite.
        rhs: (B, m).

    Returns:
        y (B, m) and a (B,) bool flag, False where a pivot was not positive.
    """
    batch, m, _ = h.shape
    tiny = torch.finfo(h.dtype).tiny
    low = torch.zeros_like(h)
    ok = torch.ones(batch, dtype=torch.bool, device=h.device)
    for j in range(m):
        row = low[:, j, :j]
        pivot = h[:, j, j] - (row * row).sum(dim=1)
        ok = ok & (pivot > 0)
        diag = pivot.clamp_min(tiny).sqrt()
        low[:, j, j] = diag
        if j + 1 < m:
            below = h[:, j + 1 :, j] - torch.einsum("bik,bk->bi", low[:, j + 1 :, :j], row)
            low[:, j + 1 :, j] = below / diag[:, None]
    y = torch.zeros_like(rhs)
    for i in range(m):  # L y = rhs
        y[:, i] = (rhs[:, i] - (low[:, i, :i] * y[:, :i]).sum(dim=1)) / low[:, i, i]
    x = torch.zeros_like(rhs)
    for i in reversed(range(m)):  # Lᵀ x = y
        x[:, i] = (y[:, i] - (low[:, i + 1 :, i] * x[:, i + 1 :]).sum(dim=1)) / low[:, i, i]
    return x, ok


def solve_spd(h: Tensor, rhs: Tensor, unrolled: bool = False) -> tuple[Tensor, Tensor]:
    """y = h⁻¹ rhs for (B, m, m) SPD h and (B, m) rhs, and a (B,) flag: factorisation ok.

    ``unrolled``: :func:`cholesky_solve_unrolled` (CUDA-graph safe) instead of the
    library's batched Cholesky; the same result up to rounding.
    """
    if unrolled:
        return cholesky_solve_unrolled(h, rhs)
    chol, info = torch.linalg.cholesky_ex(h)
    return torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1), info == 0


def anderson_weights(
    gram: Tensor, valid: Tensor, fallback: Tensor, lam: float, unrolled: bool = False
) -> Tensor:
    """Mixing weights α (B, m) of Type-II Anderson: α = y / 1ᵀy, (H + λ̃ I) y = 1.

    Args:
        gram: H = R Rᵀ (B, m, m), the Gram matrix of the stored residuals.
        valid: (B, m) bool, which slots hold pairs of each sample's current run (at
            least the newest one).
        fallback: (m,) or (B, m) weights used where the solve fails, normally the one-hot
            vector of the newest slot (the plain step s⁺ = f_k).
        lam: relative regularisation λ.
        unrolled: solve with :func:`cholesky_solve_unrolled` (see :func:`solve_spd`).

    Returns:
        α with Σ α = 1 over each sample's valid slots and 0 elsewhere, in ``gram``'s dtype.
    """
    y, factored = solve_spd(regularised_gram(gram, valid, lam), valid.to(gram.dtype), unrolled)
    alpha = y / y.sum(dim=1, keepdim=True)
    ok = factored & torch.isfinite(alpha).all(dim=1)
    return torch.where(ok[:, None], alpha, fallback)


def anderson_coefficients(
    gram: Tensor, rhs: Tensor, valid: Tensor, lam: float, unrolled: bool = False
) -> Tensor:
    """Coefficients γ (B, m) of the difference form: (H + λ̃ I) γ = ΔR r_k on valid slots.

    Args:
        gram: H = ΔR ΔRᵀ (B, m, m).
        rhs: ΔR r_k (B, m).
        valid: (B, m) bool.
        lam: relative regularisation λ (λ̃ = λ · mean of H's valid diagonal).
        unrolled: solve with :func:`cholesky_solve_unrolled` (see :func:`solve_spd`).

    Returns:
        γ with zeros on invalid slots, and zeros for a whole sample whose factorisation
        failed or gave non-finite values (the plain step).
    """
    h = regularised_gram(gram, valid, lam)
    gamma, factored = solve_spd(h, rhs * valid, unrolled)
    ok = factored & torch.isfinite(gamma).all(dim=1)
    return torch.where(ok[:, None], gamma, torch.zeros_like(gamma))


def gram_rows(vectors: Tensor, history: Tensor) -> Tensor:
    """Inner products ⟨v_j, h_i⟩ in float64: (B, j, N) against (B, m, N) → (B, j, m).

    One pass over the history gives a new row (and column) of H = R Rᵀ, or in the
    difference form that row together with the right-hand side ΔR r_k. The product is
    taken against the history's transpose, not as history × v: the same numbers, but the
    batched matrix-vector form runs several times slower on the CPU (measured 7.7 against
    1.3 ms at B = 64, m = 10, N = 12,608).
    """
    return torch.bmm(vectors, history.transpose(1, 2)).to(torch.float64)


def mixed_iterate(
    alpha: Tensor, images: Tensor, residuals: Tensor, beta: float, out: Tensor
) -> Tensor:
    """s⁺ = αᵀF − (1 − β) αᵀR = Σ_i α_i (β f_i + (1 − β) s_i), written into ``out``.

    Args:
        alpha: weights (B, m), any float dtype (cast to ``out``'s).
        images: F (B, m, N), the stored f_i = g(s_i).
        residuals: R (B, m, N), the stored r_i = f_i − s_i.
        beta: mixing β ∈ (0, 1].
        out: (B, N) result buffer.
    """
    # (B, 1, m) against (B, m, N) by bmm: einsum's form of the same product writes a
    # transposed result and copies it into place, a further pass over the state.
    weights = alpha.to(out.dtype).unsqueeze(1)
    torch.bmm(weights, images, out=out.unsqueeze(1))
    if beta != 1.0:
        out.sub_(torch.bmm(weights, residuals).squeeze(1), alpha=1.0 - beta)
    return out


def difference_iterate(
    gamma: Tensor,
    image: Tensor,
    residual: Tensor,
    image_diffs: Tensor,
    residual_diffs: Tensor,
    beta: float,
    out: Tensor,
) -> Tensor:
    """s⁺ = f_k − ΔFᵀγ − (1 − β)(r_k − ΔRᵀγ), written into ``out`` (B, N).

    Args:
        gamma: coefficients (B, m) (cast to the history's dtype).
        image: f_k = g(s_k) (B, N); residual: r_k = f_k − s_k (B, N).
        image_diffs: ΔF (B, m, N); residual_diffs: ΔR (B, m, N), in any precision.
        beta: mixing β ∈ (0, 1].
        out: (B, N) result buffer, in the state's dtype.
    """
    weights = gamma.to(image_diffs.dtype).unsqueeze(1)  # (B, 1, m)
    torch.sub(image, torch.bmm(weights, image_diffs).squeeze(1).to(out.dtype), out=out)
    if beta != 1.0:
        mixed_r = torch.bmm(weights, residual_diffs).squeeze(1).to(out.dtype)
        out.sub_(residual - mixed_r, alpha=1.0 - beta)
    return out
