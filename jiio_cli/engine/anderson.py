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

The mathematics of a step, the mixing weights from the Gram matrix of the stored
residuals and the mixed iterate, are pure functions in :mod:`jiio_cli.engine.mixing`.
This module holds what makes them fast and safe: preallocated (B, m, N) history buffers
written one slot per iteration, the Gram matrix H (B, m, m) of which one row and column
are updated per iteration (one pass over the history), the per-sample masks, the CPU
buffer swaps and the CUDA-graph-safe variant of the iteration (``SolverConfig.graph``).

History precision. With ``history="bf16"`` the two history buffers are kept in bfloat16
(about half the solver's memory at m = 20). Absolute states rounded to 8 or 11 bits
would cap the attainable residual near 1e-3, so this mode stores the difference form
instead (ΔF_i = f_{i+1} − f_i and ΔR_i = r_{i+1} − r_i, see :mod:`~jiio_cli.engine.mixing`),
which shrinks as the iteration converges, so its rounding error shrinks with it; the
newest g(s) and residual stay in the state's precision. (float16 is not offered:
differences of a converging iteration fall below its smallest normal number, 6·10⁻⁵,
and flush to zero; bfloat16 has float32's exponent range.) The Gram entries are
accumulated in float32 by the matrix product but rounded to the history's precision, so
λ is raised to at least ``LOW_PRECISION_LAM`` there.

Safeguard: Anderson can stagnate on nonlinear maps (the mixed point stops improving).
A sample whose best residual has not improved for ``patience`` iterations, or whose
residual jumps above ``blowup`` × its best, clears its history and takes m plain steps
g(s) before accelerating again; all of it per sample and on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import Tensor

from jiio_cli.engine.cuda_graph import GraphedStep
from jiio_cli.engine.mixing import (
    anderson_coefficients,
    anderson_weights,
    cholesky_solve_unrolled,
    difference_iterate,
    gram_rows,
    mixed_iterate,
)

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
            convergence when it converged) or ``"last"`` (the last one evaluated with a
            finite value, up to and including that of convergence: for maps that keep
            making progress without their residual falling, such as attacks whose
            normalised steps never shrink).
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
    graph = _records_graph(config, s0)
    loop = _SolverLoop(fn, s0, config, residual_fn or relative_residual, graph_safe=graph)
    restarts = set(config.restart_at)
    step = GraphedStep(loop.step, enabled=graph)
    # On the CPU reading the flag waits for nothing: stop as soon as every sample has.
    check_every = 1 if loop.host_masks else config.check_every
    with torch.no_grad():
        loop.first_step()
        steps = 1
        for k in range(1, config.max_iter):
            if (k % check_every) == 0 and not bool(loop.active.any()):
                break
            if k in restarts:
                loop.mixer.forget()
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


def _records_graph(config: SolverConfig, s0: Tensor) -> bool:
    """Whether the iteration is recorded as a CUDA graph (and must be written for it)."""
    return config.graph and s0.is_cuda


class _Mixer(Protocol):
    """How the loop turns (s, g(s), g(s) − s) into the next state: one of the classes
    below, picked once per solve by :func:`_mixer_for`."""

    def residual_buffer(self) -> Tensor:
        """The (B, N) buffer into which this iteration's g(s) − s is to be written."""
        ...

    def restart_stalled(self, score: Tensor, improved: Tensor, best_score: Tensor) -> None:
        """Apply the safeguard (see the module docstring) before the step."""
        ...

    def forget(self) -> None:
        """Clear every sample's history (the map changes here)."""
        ...

    def next_state(self, s: Tensor, gs: Tensor, residual: Tensor, out: Tensor) -> None:
        """Write the next state of every sample into ``out`` (B, N)."""
        ...


def _mixer_for(config: SolverConfig, s0: Tensor, graph_safe: bool) -> _Mixer:
    """The step rule of ``config``: damped, Anderson on pairs, or on differences."""
    if config.method == "picard":
        return _DampedStep(s0, config.beta)
    if HISTORY_DTYPES[config.history] is None:
        return _PairHistory(s0, config, graph_safe)
    return _DifferenceHistory(s0, config, graph_safe)


class _DampedStep:
    """Picard: s⁺ = s + β (g(s) − s). No history, hence no safeguard."""

    def __init__(self, s0: Tensor, beta: float) -> None:
        self.beta = beta
        self.diff = torch.empty_like(s0)

    def residual_buffer(self) -> Tensor:
        return self.diff

    def restart_stalled(self, score: Tensor, improved: Tensor, best_score: Tensor) -> None:
        pass

    def forget(self) -> None:
        pass

    def next_state(self, s: Tensor, gs: Tensor, residual: Tensor, out: Tensor) -> None:
        torch.add(s, residual, alpha=self.beta, out=out)


class _History:
    """Buffers shared by both forms of Anderson's history, updated in place.

    ``images`` and ``residuals`` (B, m, N) hold the last m pairs (f_i, r_i) or their
    differences, ``gram`` (B, m, m) their residuals' Gram matrix in float64, ``valid``
    (B, m) which slots belong to each sample's current run, ``slot`` (1,) the slot this
    iteration writes; ``stale`` and ``plain_left`` (B,) drive the safeguard.
    """

    def __init__(
        self, s0: Tensor, config: SolverConfig, history_dtype: torch.dtype, graph_safe: bool
    ) -> None:
        batch, n = s0.shape
        m, device = config.memory, s0.device
        self.memory, self.beta, self.blowup = m, config.beta, config.blowup
        self.patience = 2 * m if config.patience is None else config.patience
        # The library's batched Cholesky solve (MAGMA) cannot be recorded into a CUDA
        # graph: it fails silently there. Graph mode solves the small system in plain kernels.
        self.unrolled = graph_safe
        self.images = s0.new_zeros(batch, m, n, dtype=history_dtype)
        self.residuals = s0.new_zeros(batch, m, n, dtype=history_dtype)
        self.gram = torch.zeros(batch, m, m, dtype=torch.float64, device=device)
        self.valid = torch.zeros(batch, m, dtype=torch.bool, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.stale = torch.zeros(batch, dtype=torch.long, device=device)
        self.plain_left = torch.zeros(batch, dtype=torch.long, device=device)

    def forget(self) -> None:
        self.valid.zero_()

    def restart_stalled(self, score: Tensor, improved: Tensor, best_score: Tensor) -> None:
        """Stagnating or blowing-up samples forget their history and take plain steps
        g(s) for m iterations before accelerating again."""
        stale = torch.where(improved, 0, self.stale + 1)
        restart = score > self.blowup * best_score
        if self.patience > 0:
            restart = (stale >= self.patience) | restart
        self.stale.copy_(stale.masked_fill(restart, 0))
        self.plain_left.copy_(torch.where(restart, self.memory, (self.plain_left - 1).clamp_min(0)))
        self.valid.logical_and_((self.plain_left == 0)[:, None])

    def _write_gram_row(self, row: Tensor) -> None:
        """Row and column ``slot`` of H from the new entries ``row`` (B, m) float64."""
        self.gram.index_copy_(1, self.slot, row.unsqueeze(1))
        self.gram.index_copy_(2, self.slot, row.unsqueeze(2))


class _PairHistory(_History):
    """Type-II Anderson on the last m pairs (f_i, r_i) in the state's precision.

    In an eager solve the slot index is also kept as a host integer (``host_slot``, equal
    to ``slot``: both advance once per iteration), so that g(s) − s is written straight
    into its history slot and g(s) into ``images``'s, instead of into a separate buffer
    and then copied in: two (B, N) passes fewer per iteration. A CUDA graph replays one
    recorded iteration, so there the slot must stay a tensor and the pair is copied in.
    """

    def __init__(self, s0: Tensor, config: SolverConfig, graph_safe: bool) -> None:
        super().__init__(s0, config, s0.dtype, graph_safe)
        self.lam = config.lam
        self.newest = torch.eye(config.memory, dtype=torch.float64, device=s0.device)
        self.host_slot: int | None = None if graph_safe else 0
        self.diff = torch.empty_like(s0) if graph_safe else torch.empty(0)

    def residual_buffer(self) -> Tensor:
        return self.diff if self.host_slot is None else self.residuals[:, self.host_slot]

    def next_state(self, s: Tensor, gs: Tensor, residual: Tensor, out: Tensor) -> None:
        if self.host_slot is None:
            self.images.index_copy_(1, self.slot, gs.unsqueeze(1))
            self.residuals.index_copy_(1, self.slot, residual.unsqueeze(1))
        else:  # the residual is already in its slot
            self.images[:, self.host_slot].copy_(gs)
        self._write_gram_row(gram_rows(residual.unsqueeze(1), self.residuals).squeeze(1))
        self.valid.index_fill_(1, self.slot, True)
        # Where the solve fails: the one-hot weights of the newest slot, a plain step.
        fallback = self.newest.index_select(0, self.slot)
        alpha = anderson_weights(self.gram, self.valid, fallback, self.lam, self.unrolled)
        mixed_iterate(alpha, self.images, self.residuals, self.beta, out)
        self.slot.add_(1).remainder_(self.memory)
        if self.host_slot is not None:
            self.host_slot = (self.host_slot + 1) % self.memory


class _DifferenceHistory(_History):
    """Anderson in the difference form, with a low-precision history of (ΔF_i, ΔR_i)."""

    def __init__(self, s0: Tensor, config: SolverConfig, graph_safe: bool) -> None:
        low = HISTORY_DTYPES[config.history]
        assert low is not None
        super().__init__(s0, config, low, graph_safe)
        batch, n = s0.shape
        self.lam = max(config.lam, LOW_PRECISION_LAM)
        # The newest f and r in full precision, and whether a sample has a previous
        # iterate of its current run to difference against.
        self.prev_f = s0.new_zeros(batch, n)
        self.prev_r = s0.new_zeros(batch, n)
        self.has_prev = torch.zeros(batch, dtype=torch.bool, device=s0.device)
        self.slot_mask = torch.eye(config.memory, dtype=torch.bool, device=s0.device)
        # [Δr_new; r] in the history's precision, written in place each iteration (the
        # left-hand sides of the one pass over ΔR below).
        self.pair = s0.new_zeros(batch, 2, n, dtype=low)
        self.diff = torch.empty_like(s0)

    def residual_buffer(self) -> Tensor:
        return self.diff

    def forget(self) -> None:
        super().forget()
        self.has_prev.zero_()

    def next_state(self, s: Tensor, gs: Tensor, residual: Tensor, out: Tensor) -> None:
        low = self.images.dtype
        d_r = residual - self.prev_r
        self.images.index_copy_(1, self.slot, (gs - self.prev_f).to(low).unsqueeze(1))
        self.residuals.index_copy_(1, self.slot, d_r.to(low).unsqueeze(1))
        self.prev_f.copy_(gs)
        self.prev_r.copy_(residual)
        # One pass over ΔR for the new Gram row (ΔR·Δr_new) and the right-hand side (ΔR·r).
        self.pair[:, 0].copy_(d_r)
        self.pair[:, 1].copy_(residual)
        both = gram_rows(self.pair, self.residuals)
        self._write_gram_row(both[:, 0])
        # The newest difference is usable if the sample had a previous iterate and is not
        # taking plain steps after a safeguard restart.
        usable = self.has_prev & (self.plain_left == 0)
        self.valid.logical_or_(self.slot_mask.index_select(0, self.slot) & usable[:, None])
        self.has_prev.fill_(True)
        gamma = anderson_coefficients(self.gram, both[:, 1], self.valid, self.lam, self.unrolled)
        difference_iterate(gamma, gs, residual, self.images, self.residuals, self.beta, out)
        self.slot.add_(1).remainder_(self.memory)


class _SolverLoop:
    """Buffers of one solve and its iteration, updated in place (CUDA-graph safe).

    Everything that changes between iterations (the state, best iterates, masks, the
    mixer's history and the iteration counter) lives in tensors allocated here, so one
    recorded iteration can be replayed.
    """

    def __init__(
        self,
        fn: MapFn,
        s0: Tensor,
        config: SolverConfig,
        residual_fn: ResidualFn,
        graph_safe: bool = False,
    ) -> None:
        self.fn, self.residual_fn = fn, residual_fn
        self.tol = config.tol
        self.keep_last = config.keep == "last"
        batch, n = s0.shape
        device = s0.device
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
        self.mixer = _mixer_for(config, self.s, graph_safe)
        # The next state is written into this buffer, never into a fresh allocation.
        self.spare = torch.empty_like(self.s)
        # On the CPU the host is the device: reading a mask waits for nothing. There,
        # while every sample is active, the next state becomes s by swapping buffers,
        # and only the rows that improved are copied into best_s (none at all when every
        # row did: s itself becomes best_s). That replaces two (B, N) three-operand
        # selections per iteration. Elsewhere the rows are selected on the device.
        self.host_masks = s0.device.type == "cpu"

    def first_step(self) -> None:
        """Iteration 0, which also sizes the residual buffer."""
        gs, diff, res = self._evaluate()
        self.best_res = torch.full_like(res, float("inf"))
        self._update(gs, diff, res)

    def step(self) -> None:
        """One iteration k ≥ 1, entirely on the device."""
        self._update(*self._evaluate())

    def _evaluate(self) -> tuple[Tensor, Tensor, Tensor]:
        """g(s), g(s) − s (in the mixer's buffer) and the residuals (B, K)."""
        gs = self.fn(self.s, self.k)
        diff = self.mixer.residual_buffer()
        torch.sub(gs, self.s, out=diff)
        return gs, diff, self.residual_fn(self.s, gs, diff)

    def _update(self, gs: Tensor, diff: Tensor, res: Tensor) -> None:
        score, improved, kept = self._judge(gs, res)
        self._safeguard(score, improved)
        self.mixer.next_state(self.s, gs, diff, out=self.spare)
        self._advance(kept)

    def _judge(self, gs: Tensor, res: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Score the evaluation and update the per-sample records and masks.

        Returns the score (B,) (the max-residual, +inf where not finite), the samples
        whose best score it improved, and those whose iterate is kept (``keep``).
        """
        finite = all_finite(gs, self.finite_weights) & torch.isfinite(res).all(dim=1)
        score = torch.where(finite, res.amax(dim=1), torch.inf)
        active = self.active
        improved = active & (score < self.best_score)
        # Formed before ``active`` is updated in place below: the iterate a sample
        # converges at is its last one too, and a failing evaluation is not kept.
        kept = active & finite if self.keep_last else improved
        self.best_res.copy_(torch.where(kept[:, None], res, self.best_res))
        self.best_score.copy_(torch.where(improved, score, self.best_score))
        self.iterations.add_(active)
        done = active & finite & (score <= self.tol)
        self.converged.logical_or_(done)
        self.failed.logical_or_(active & ~finite)
        active.logical_and_(~done & finite)
        self.k.add_(1)
        return score, improved, kept

    def _safeguard(self, score: Tensor, improved: Tensor) -> None:
        """The mixer's safeguard against the updated best scores (one place for tests to
        observe which samples improved)."""
        self.mixer.restart_stalled(score, improved, self.best_score)

    def _advance(self, kept: Tensor) -> None:
        """Kept rows of s go into best_s, and the active rows of the next state into s."""
        s, s_next, active = self.s, self.spare, self.active
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
