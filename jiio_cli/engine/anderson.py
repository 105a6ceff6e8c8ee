"""Batched fixed-point solvers: Anderson acceleration and damped (Picard) iteration.

Both solve ``s = g(s)`` for a batch of independent problems stacked as rows of a
(B, N) state. They share one loop with these guarantees:

* **Per-sample convergence.** Sample b stops when every entry of its residual vector
  ``r_b = residual_fn(s, g(s))[b]`` is ≤ ``tol``. From then on its state is frozen:
  later iterations (which still evaluate g on the whole batch, keeping shapes static)
  never change it, so its result is bit-identical to a run that stopped right there.
* **No host synchronisation in the loop** except one ``any()`` every ``check_every``
  iterations to stop early; masks, best-iterate tracking and the Anderson weights are
  all computed on the device. (On the CPU the host is the device, and the loop reads its
  masks freely: it checks at every iteration and swaps buffers while all rows are active.)
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

History precision. With ``history="bf16"`` the two (B, m, N) history buffers are kept
in bfloat16 (about half the solver's memory at m = 20). Absolute
states rounded to 8 or 11 bits would cap the attainable residual near 1e-3, so this mode
uses the equivalent difference form instead: the buffers hold ΔF_i = g(s_{i+1}) − g(s_i)
and ΔG_i = (g(s_{i+1}) − s_{i+1}) − (g(s_i) − s_i), which shrink as the iteration
converges, so their rounding error shrinks with them; the newest g(s) and residual stay
float32. The coefficients solve the unconstrained least squares

    min_γ ‖g_k − ΔG γ‖² + λ̃ ‖γ‖²,   s_{k+1} = s_k + β g_k − (ΔF − (1 − β) ΔG) γ,

the same Type-II step in exact arithmetic (with m differences, i.e. m + 1 iterates).
(float16 is not offered: differences of a converging iteration fall below its smallest
normal number, 6·10⁻⁵, and flush to zero; bfloat16 has float32's exponent range.)
The Gram entries are accumulated in float32 by the matrix product but rounded to the
history's precision, so λ is raised to at least ``LOW_PRECISION_LAM`` there.

Safeguard: Anderson can stagnate on nonlinear maps (the mixed point stops improving).
A sample whose best residual has not improved for ``patience`` iterations, or whose
residual jumps above ``blowup`` × its best, clears its history and takes m plain steps
g(s) before accelerating again; all of it per sample and on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from jiio_cli.engine.cuda_graph import GraphedStep

__all__ = [
    "FixedPointResult",
    "SolverConfig",
    "all_finite",
    "anderson_coefficients",
    "anderson_weights",
    "cholesky_solve_unrolled",
    "fixed_point_solve",
    "relative_residual",
]

MapFn = Callable[[Tensor, Tensor], Tensor]
ResidualFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(s, g(s), g(s) − s) -> (B, K)``: the solver computes the difference once per
iteration and hands it to the residual and to its own step."""

RESIDUAL_FLOOR = 1e-6
"""RMS floor in relative residuals, so blocks that converge to zero still converge."""

HISTORY_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
"""Storage dtype of Anderson's history per ``SolverConfig.history`` (None: the state's)."""

LOW_PRECISION_LAM = 1e-3
"""Smallest relative regularisation of the least squares when the Gram matrix is rounded
to a bfloat16 history (its entries carry relative errors of about 2⁻⁹)."""


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
        check_every: iterations between host-side checks for early stopping (on a
            GPU; on the CPU the loop checks at every iteration, which costs nothing there).
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
        graph: on a CUDA device, record one iteration as a CUDA graph after two warm-up
            iterations and replay it (one launch per iteration instead of hundreds);
            results are the same as eager. Ignored on the CPU.
        history: precision of Anderson's history buffers: ``"fp32"`` (the state's own
            precision) or ``"bf16"`` (difference form, see the module docstring): less
            memory, slightly less accurate mixing.
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
    graph: bool = False
    history: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        if self.method not in ("anderson", "picard"):
            raise ValueError(f"unknown solver method {self.method!r}")
        if self.keep not in ("best", "last"):
            raise ValueError(f"unknown keep rule {self.keep!r}: expected 'best' or 'last'")
        if self.history not in HISTORY_DTYPES:
            raise ValueError(f"unknown history precision {self.history!r}: expected fp32 or bf16")
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
        graph: the iterations after warm-up were replayed from a CUDA graph.
        graph_failure: why capture was abandoned (the solve then ran eagerly), or None.
    """

    state: Tensor
    residual: Tensor
    iterations: Tensor
    converged: Tensor
    failed: Tensor
    steps: int
    graph: bool = False
    graph_failure: str | None = None


def finite_test_weights(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The (N,) vector of :func:`all_finite`'s scaled row sum: 2⁻ᵏ with 2ᵏ ≥ 2N."""
    return torch.full(
        (n,), 2.0 ** -(math.ceil(math.log2(max(n, 1))) + 1), dtype=dtype, device=device
    )


def all_finite(s: Tensor, weights: Tensor | None = None) -> Tensor:
    """Whether each row of a (B, N) tensor is free of NaN and ±Inf, (B,) bool.

    One scaled row sum instead of an elementwise test: Σ_i s_i · 2⁻ᵏ with 2ᵏ ≥ 2N, as a
    matrix-vector product. A NaN or an infinity makes the sum non-finite. For finite
    entries every partial sum is at most N · max · 2⁻ᵏ ≤ max / 2 in magnitude (the
    products by a power of two are exact), so the sum cannot overflow the row's own
    dtype and the answer is exact, for float32, float64 and bfloat16 alike. The product
    reads the row once and writes nothing of its size, where ``isfinite(s).all(1)``
    takes several elementwise passes and a (B, N) temporary, and a float64 sum of
    float32 rows first converts them into a float64 copy, twice their size.

    ``weights``: :func:`finite_test_weights` for the row's size, dtype and device, for
    callers that test rows of one shape repeatedly (built here when None).
    """
    if weights is None:
        weights = finite_test_weights(s.shape[1], s.dtype, s.device)
    return torch.isfinite(torch.mv(s, weights))


def relative_residual(s: Tensor, gs: Tensor, d: Tensor | None = None) -> Tensor:
    """‖g(s) − s‖ / (‖g(s)‖ + 1e-6·√N) per sample, shape (B, 1).

    ``d``: g(s) − s when the caller has it already (computed here when None).
    """
    floor = RESIDUAL_FLOOR * s.shape[1] ** 0.5
    d = gs - s if d is None else d
    return (d.norm(dim=1) / (gs.norm(dim=1) + floor)).unsqueeze(1)


def cholesky_solve_unrolled(h: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """Solve h y = rhs for a batch of small SPD matrices with elementwise kernels only.

    A column-by-column Cholesky factorisation and two triangular sweeps, O(m) batched
    kernels for m×m systems and no linear-algebra library call: the fallback used when a
    library solve cannot be recorded into a CUDA graph.

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


def anderson_weights(
    gram: Tensor, valid: Tensor, fallback: Tensor, lam: float, unrolled: bool = False
) -> Tensor:
    """Mixing weights α (B, m) from the history Gram matrix.

    Args:
        gram: H = G Gᵀ of shape (B, m, m).
        valid: (B, m) bool, which history slots hold pairs of each sample's current run
            (at least the newest one).
        fallback: (m,) weights used where the solve fails, normally the one-hot vector of
            the newest slot (a plain step).
        lam: relative regularisation λ.
        unrolled: solve with :func:`cholesky_solve_unrolled` instead of the library's
            batched Cholesky (same result up to rounding).

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
    rhs = valid.to(gram.dtype)
    if unrolled:
        y, factored = cholesky_solve_unrolled(h, rhs)
    else:
        chol, info = torch.linalg.cholesky_ex(h)
        y = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
        factored = info == 0
    alpha = y / y.sum(dim=1, keepdim=True)
    ok = factored & torch.isfinite(alpha).all(dim=1)
    return torch.where(ok[:, None], alpha, fallback)


def anderson_coefficients(
    gram: Tensor, rhs: Tensor, valid: Tensor, lam: float, unrolled: bool = False
) -> Tensor:
    """Coefficients γ (B, m) of the difference form: (H + λ̃ I) γ = rhs on valid slots.

    Args:
        gram: H = ΔG ΔGᵀ (B, m, m); rhs: ΔG g_k (B, m); valid: (B, m) bool.
        lam: relative regularisation λ (λ̃ = λ · mean of H's valid diagonal).
        unrolled: solve with :func:`cholesky_solve_unrolled`.

    Returns:
        γ with zeros on invalid slots, and zeros for a whole sample whose factorisation
        failed or gave non-finite values (a plain step).
    """
    pair = valid[:, :, None] & valid[:, None, :]
    h = gram * pair
    diag = torch.diagonal(h, dim1=1, dim2=2)
    n_valid = valid.sum(dim=1, keepdim=True).clamp_min(1)
    reg = lam * diag.sum(dim=1, keepdim=True) / n_valid
    h = h + torch.diag_embed(torch.where(valid, reg, torch.ones_like(reg)))
    b = rhs * valid
    if unrolled:
        gamma, factored = cholesky_solve_unrolled(h, b)
    else:
        chol, info = torch.linalg.cholesky_ex(h)
        gamma = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
        factored = info == 0
    ok = factored & torch.isfinite(gamma).all(dim=1)
    return torch.where(ok[:, None], gamma, torch.zeros_like(gamma))


def fixed_point_solve(
    fn: MapFn,
    s0: Tensor,
    config: SolverConfig,
    residual_fn: ResidualFn | None = None,
) -> FixedPointResult:
    """Solve s = g(s) for each row of a batch.

    Args:
        fn: the map ``g(s, k)`` taking the (B, N) state and the iteration index k as a
            0-dim int64 tensor on the state's device (so maps with iteration-dependent
            step sizes can be solved without reading it on the host), returning (B, N).
            It is called without autograd recording on the solver's own tensors. The
            solver copies what it keeps of g(s) before the next call, so a map may write
            its value into the same buffer every time. With ``config.graph`` it must
            follow :mod:`jiio_cli.engine.cuda_graph`'s contract.
        s0: initial state (B, N).
        config: solver settings.
        residual_fn: ``(s, g(s), g(s) − s) -> (B, K)`` residuals; sample b converges
            when all K entries are ≤ tol. Defaults to :func:`relative_residual`.

    Returns:
        A :class:`FixedPointResult`.
    """
    loop = _SolverLoop(fn, s0, config, residual_fn or relative_residual)
    restarts = set(config.restart_at)
    step = GraphedStep(loop.step, enabled=loop.unrolled)
    # On the CPU reading the flag waits for nothing: stop as soon as every sample has.
    check_every = 1 if loop.host_masks else config.check_every
    with torch.no_grad():
        loop.first_step()
        steps = 1
        for k in range(1, config.max_iter):
            if (k % check_every) == 0 and not bool(loop.active.any()):
                break
            if loop.anderson and k in restarts:
                loop.forget()
            step()
            steps += 1
    return FixedPointResult(
        state=loop.best_s,
        residual=loop.best_res,
        iterations=loop.iterations,
        converged=loop.converged,
        failed=loop.failed,
        steps=steps,
        graph=step.captured,
        graph_failure=step.failure,
    )


class _SolverLoop:
    """Buffers of one solve and its iteration, updated in place (CUDA-graph safe).

    Everything that changes between iterations — the state, best iterates, masks,
    Anderson's history, its Gram matrix, the history slot and the iteration counter —
    lives in tensors allocated here, so one recorded iteration can be replayed.
    """

    def __init__(
        self, fn: MapFn, s0: Tensor, config: SolverConfig, residual_fn: ResidualFn
    ) -> None:
        self.fn = fn
        self.residual_fn = residual_fn
        self.config = config
        batch, n = s0.shape
        device = s0.device
        self.anderson = config.method == "anderson"
        self.keep_last = config.keep == "last"
        # The library's batched Cholesky solve (MAGMA) cannot be recorded into a CUDA
        # graph: it fails silently there. Graph mode solves Anderson's small system in
        # plain kernels.
        self.unrolled = config.graph and s0.is_cuda
        m = config.memory
        self.patience = 2 * m if config.patience is None else config.patience

        self.s = s0.detach().clone()
        self.best_s = self.s.clone()
        self.best_score = torch.full((batch,), float("inf"), device=device)
        self.best_res = torch.empty(0, device=device)
        self.active = torch.ones(batch, dtype=torch.bool, device=device)
        self.converged = torch.zeros_like(self.active)
        self.failed = torch.zeros_like(self.active)
        self.iterations = torch.zeros(batch, dtype=torch.long, device=device)
        self.finite_weights = finite_test_weights(n, s0.dtype, device)
        self.k = torch.zeros((), dtype=torch.long, device=device)
        history_dtype = HISTORY_DTYPES[config.history]
        self.differences = self.anderson and history_dtype is not None
        self.lam = max(config.lam, LOW_PRECISION_LAM) if self.differences else config.lam
        if self.anderson:
            dtype = history_dtype or s0.dtype
            self.hist_f = s0.new_zeros(batch, m, n, dtype=dtype)
            self.hist_g = s0.new_zeros(batch, m, n, dtype=dtype)
            if self.differences:
                # The newest g(s) and residual in full precision, and whether a sample
                # has a previous iterate of its current run to difference against.
                self.prev_f = s0.new_zeros(batch, n)
                self.prev_g = s0.new_zeros(batch, n)
                self.has_prev = torch.zeros(batch, dtype=torch.bool, device=device)
                self.slot_mask = torch.eye(m, dtype=torch.bool, device=device)
                # [Δg_new; g] in the history's precision, written in place each iteration
                # (the right-hand sides of the one ΔG pass below).
                self.pair = s0.new_zeros(batch, 2, n, dtype=history_dtype)
            self.gram = torch.zeros(batch, m, m, dtype=torch.float64, device=device)
            self.one_hot = torch.eye(m, dtype=torch.float64, device=device)
            self.valid = torch.zeros(batch, m, dtype=torch.bool, device=device)
            self.stale = torch.zeros(batch, dtype=torch.long, device=device)
            self.plain_left = torch.zeros(batch, dtype=torch.long, device=device)
            self.slot = torch.zeros(1, dtype=torch.long, device=device)
        # The history slot of this iteration as a host integer, equal to ``slot`` (both
        # advance once per iteration). An eager float32 Anderson solve writes g(s) − s
        # straight into that slot of the history and g(s) into hist_f's, instead of into
        # ``diff`` and then copying both in: two (B, N) passes fewer per iteration. A
        # CUDA graph replays one recorded iteration, so there the slot must stay a tensor.
        self.host_slot = 0
        self.direct_slots = self.anderson and not self.differences and not self.unrolled
        # Otherwise g(s) − s goes into this buffer, written in place once per iteration and
        # read by the residual and the step (each used to form it afresh: a (B, N) pass
        # and allocation per use).
        self.diff = torch.empty(0) if self.direct_slots else torch.empty_like(self.s)
        # The next state is written into this buffer, never into a fresh allocation.
        self.spare = torch.empty_like(self.s)
        # On the CPU the host is the device: reading a mask waits for nothing. There,
        # while every sample is active, the next state becomes s by swapping buffers,
        # and only the rows that improved are copied into best_s (none at all when every
        # row did: s itself becomes best_s). That replaces two (B, N) three-operand
        # selections per iteration. Elsewhere the rows are selected on the device.
        self.host_masks = s0.device.type == "cpu"

    def forget(self) -> None:
        """Clear every sample's history (the map changes here)."""
        self.valid.zero_()
        if self.differences:
            self.has_prev.zero_()

    def first_step(self) -> None:
        """Iteration 0, which also sizes the residual buffer."""
        gs, diff, res = self._evaluate()
        self.best_res = torch.full_like(res, float("inf"))
        self._update(gs, diff, res)

    def step(self) -> None:
        """One iteration k ≥ 1, entirely on the device."""
        self._update(*self._evaluate())

    def _evaluate(self) -> tuple[Tensor, Tensor, Tensor]:
        """g(s), g(s) − s (in ``diff`` or this iteration's history slot) and the
        residuals (B, K)."""
        gs = self.fn(self.s, self.k)
        diff = self.hist_g[:, self.host_slot] if self.direct_slots else self.diff
        torch.sub(gs, self.s, out=diff)
        return gs, diff, self.residual_fn(self.s, gs, diff)

    def _update(self, gs: Tensor, diff: Tensor, res: Tensor) -> None:
        cfg, s = self.config, self.s
        finite = all_finite(gs, self.finite_weights) & torch.isfinite(res).all(dim=1)
        score = torch.where(finite, res.amax(dim=1), torch.inf)
        active = self.active
        improved = active & (score < self.best_score)
        kept = active if self.keep_last else improved
        self.best_res.copy_(torch.where(kept[:, None], res, self.best_res))
        self.best_score.copy_(torch.where(improved, score, self.best_score))
        self.iterations.add_(active)
        done = active & finite & (score <= cfg.tol)
        self.converged.logical_or_(done)
        self.failed.logical_or_(active & ~finite)
        active.logical_and_(~done & finite)
        self.k.add_(1)
        s_next = self.spare
        if self.anderson:
            self._anderson_step(gs, diff, score, improved, out=s_next)
        else:
            torch.add(s, diff, alpha=cfg.beta, out=s_next)
        if self.host_masks and bool(active.all()):
            if bool(kept.all()):
                # s is every sample's best iterate: it becomes best_s, with no copy.
                self.best_s, self.s, self.spare = s, s_next, self.best_s
            else:
                rows = kept.nonzero().squeeze(1)
                if rows.numel():
                    self.best_s.index_copy_(0, rows, s.index_select(0, rows))
                self.s, self.spare = s_next, s
        else:
            # In place (out= the tensor being updated): no (B, N) temporary and copy.
            torch.where(kept[:, None], s, self.best_s, out=self.best_s)
            torch.where(active[:, None], s_next, s, out=s)

    def _safeguard(self, score: Tensor, improved: Tensor) -> None:
        """Stagnating or blowing-up samples forget their history and take plain steps
        g(s) for m iterations before accelerating again."""
        cfg = self.config
        stale = torch.where(improved, 0, self.stale + 1)
        if self.patience > 0:
            restart = (stale >= self.patience) | (score > cfg.blowup * self.best_score)
        else:
            restart = score > cfg.blowup * self.best_score
        self.stale.copy_(stale.masked_fill(restart, 0))
        self.plain_left.copy_(torch.where(restart, cfg.memory, (self.plain_left - 1).clamp_min(0)))
        self.valid.logical_and_((self.plain_left == 0)[:, None])

    def _anderson_step(
        self, gs: Tensor, g: Tensor, score: Tensor, improved: Tensor, out: Tensor
    ) -> None:
        """Writes the mixed next state of every sample into ``out`` (B, N)."""
        if self.differences:
            self._difference_step(gs, g, score, improved, out)
            return
        cfg, s, slot = self.config, self.s, self.slot
        m = cfg.memory
        if self.direct_slots:  # g is already in its slot (see ``host_slot``)
            self.hist_f[:, self.host_slot].copy_(gs)
        else:
            self.hist_f.index_copy_(1, slot, gs.unsqueeze(1))
            self.hist_g.index_copy_(1, slot, g.unsqueeze(1))
        # g (B, 1, N) against the history's transpose, not hist_g (B, m, N) against g: the
        # same product, but the batched matrix-vector form runs several times slower on
        # the CPU (measured 7.7 against 1.3 ms at B = 64, m = 10, N = 12,608).
        row = torch.bmm(g.unsqueeze(1), self.hist_g.transpose(1, 2)).squeeze(1)
        row = row.to(torch.float64)
        self.gram.index_copy_(1, slot, row.unsqueeze(1))
        self.gram.index_copy_(2, slot, row.unsqueeze(2))
        self._safeguard(score, improved)
        self.valid.index_fill_(1, slot, True)
        fallback = self.one_hot.index_select(0, slot)
        alpha = anderson_weights(self.gram, self.valid, fallback, self.lam, self.unrolled)
        # (B, 1, m) against (B, m, N) by bmm: einsum's form of the same product writes a
        # transposed result and copies it into place, a further pass over the state.
        alpha = alpha.to(s.dtype).unsqueeze(1)
        torch.bmm(alpha, self.hist_f, out=out.unsqueeze(1))
        if cfg.beta != 1.0:
            mixed_g = torch.bmm(alpha, self.hist_g).squeeze(1)
            out.sub_(mixed_g, alpha=1.0 - cfg.beta)
        self.slot.add_(1).remainder_(m)
        self.host_slot = (self.host_slot + 1) % m

    def _difference_step(
        self, gs: Tensor, g: Tensor, score: Tensor, improved: Tensor, out: Tensor
    ) -> None:
        """The Type-II step in difference form with a low-precision history."""
        cfg, s, slot = self.config, self.s, self.slot
        low = self.hist_f.dtype
        d_g = g - self.prev_g
        self.hist_f.index_copy_(1, slot, (gs - self.prev_f).to(low).unsqueeze(1))
        self.hist_g.index_copy_(1, slot, d_g.to(low).unsqueeze(1))
        self.prev_f.copy_(gs)
        self.prev_g.copy_(g)
        # One pass over ΔG for the new Gram row (ΔG·Δg_new) and the right-hand side (ΔG·g).
        self.pair[:, 0].copy_(d_g)
        self.pair[:, 1].copy_(g)
        # (B, 2, N) against the history's transpose: see the note in _anderson_step.
        both = torch.bmm(self.pair, self.hist_g.transpose(1, 2)).to(torch.float64)
        row, rhs = both[:, 0], both[:, 1]
        self.gram.index_copy_(1, slot, row.unsqueeze(1))
        self.gram.index_copy_(2, slot, row.unsqueeze(2))
        self._safeguard(score, improved)
        # The newest difference is usable if the sample had a previous iterate and is not
        # taking plain steps after a safeguard restart.
        usable = self.has_prev & (self.plain_left == 0)
        newest = self.slot_mask.index_select(0, slot) & usable[:, None]
        self.valid.logical_or_(newest)
        self.has_prev.fill_(True)
        gamma = anderson_coefficients(self.gram, rhs, self.valid, self.lam, self.unrolled)
        gamma = gamma.to(low).unsqueeze(1)  # (B, 1, m)
        correction = torch.bmm(gamma, self.hist_f).squeeze(1).to(s.dtype)
        torch.sub(gs, correction, out=out)
        if cfg.beta != 1.0:
            mixed_g = torch.bmm(gamma, self.hist_g).squeeze(1).to(s.dtype)
            out.sub_(g - mixed_g, alpha=1.0 - cfg.beta)
        self.slot.add_(1).remainder_(cfg.memory)
