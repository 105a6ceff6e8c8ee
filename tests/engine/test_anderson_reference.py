"""The fast Anderson loop against a textbook Anderson written out in the test.

The textbook version works on one sample at a time in float64, keeps its last m pairs
in Python lists and solves the constrained least squares from scratch at every step
through its KKT system, a formulation independent of the loop's (preallocated history,
one Gram row per iteration, α = y / 1ᵀy from a Cholesky solve, per-sample masks). Both
must take the same steps up to rounding; the tolerances leave room for any CPU's
summation order (1 or 2 threads, AVX2 or AVX512), not for a different step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from jiio_cli.engine import SolverConfig, fixed_point_solve
from jiio_cli.engine import anderson as anderson_module

SampleMap = Callable[[Tensor], Tensor]


def textbook_anderson(
    g: SampleMap, s0: Tensor, memory: int, steps: int, lam: float, beta: float, restart_at=()
) -> list[Tensor]:
    """Type-II Anderson on one sample (N,); returns the iterates s_0 … s_steps.

    α = argmin ‖Σ α_i r_i‖² + λ̃‖α‖² subject to Σ α_i = 1, with r_i = g(s_i) − s_i over
    the last m iterates and λ̃ = λ · mean_i ‖r_i‖², from the KKT system
    [[H + λ̃I, 1], [1ᵀ, 0]] [α; ν] = [0; 1]; then s⁺ = Σ α_i (β g(s_i) + (1 − β) s_i).
    """
    s, images, residuals, iterates = s0.clone(), [], [], [s0.clone()]
    for k in range(steps):
        if k in restart_at:  # the map changes here: forget the history
            images, residuals = [], []
        f = g(s)
        images, residuals = [*images, f][-memory:], [*residuals, f - s][-memory:]
        f_hist, r_hist = torch.stack(images), torch.stack(residuals)  # (j, N)
        j = len(images)
        h = r_hist @ r_hist.T
        h = h + lam * h.diagonal().mean() * torch.eye(j, dtype=h.dtype)
        kkt = torch.ones(j + 1, j + 1, dtype=h.dtype)
        kkt[:j, :j], kkt[j, j] = h, 0.0
        rhs = torch.zeros(j + 1, dtype=h.dtype)
        rhs[j] = 1.0
        alpha = torch.linalg.solve(kkt, rhs)[:j]
        s = alpha @ (beta * f_hist + (1 - beta) * (f_hist - r_hist))
        iterates.append(s)
    return iterates


def contractive_maps(
    batch: int, n: int, rates: list[float], nonlinear: bool, seed: int
) -> tuple[Callable[[Tensor, Tensor], Tensor], list[SampleMap]]:
    """g_b(s) = φ(W_b s + c_b) with ‖W_b‖₂ = rates[b] < 1 and φ = tanh or the identity:
    a contraction of rate ≤ rates[b] per sample. Returns the batched map (as the solver
    calls it) and the per-sample maps (as the textbook calls them)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(batch, n, n, generator=gen, dtype=torch.float64)
    w = (
        w
        * (torch.tensor(rates, dtype=torch.float64) / torch.linalg.matrix_norm(w, ord=2))[
            :, None, None
        ]
    )
    c = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    phi = torch.tanh if nonlinear else (lambda t: t)

    def batched(s: Tensor, _k: Tensor) -> Tensor:
        return phi(torch.einsum("bij,bj->bi", w.to(s.dtype), s) + c.to(s.dtype))

    def sample_map(b: int) -> SampleMap:
        return lambda s: phi(w[b] @ s + c[b])

    return batched, [sample_map(b) for b in range(batch)]


def fast_iterates(
    g: Callable[[Tensor, Tensor], Tensor], s0: Tensor, cfg: SolverConfig
) -> tuple[list[Tensor], anderson_module.FixedPointResult]:
    """The fast loop's iterates s_0, s_1, … (the states it evaluated g at) and its result."""
    seen: list[Tensor] = []

    def recording(s: Tensor, k: Tensor) -> Tensor:
        seen.append(s.clone())
        return g(s, k)

    return seen, fixed_point_solve(recording, s0, cfg)


def relative_gap(got: Tensor, want: Tensor) -> float:
    return float((got - want).norm() / want.norm())


# No safeguard (the textbook has none) and no tolerance stop: the steps themselves compared.
PLAIN = SolverConfig(tol=1e-30, keep="last", patience=0, blowup=1e300, lam=1e-7)


@pytest.mark.parametrize("graph_safe", [False, True])
@pytest.mark.parametrize("nonlinear", [False, True])
@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_iterates_match_the_textbook(
    monkeypatch: pytest.MonkeyPatch, graph_safe: bool, nonlinear: bool, beta: float
) -> None:
    # graph_safe: the iteration as written for CUDA-graph capture (history slots as
    # tensors, the unrolled Cholesky solve), run eagerly on the CPU.
    monkeypatch.setattr(anderson_module, "_records_graph", lambda config, s0: graph_safe)
    seed = int(torch.randint(0, 2**31, ()).item())
    batch, n, memory, steps = 3, 16, 4, 18  # 18 steps: the history wraps four times
    g, maps = contractive_maps(batch, n, [0.9, 0.95, 0.8], nonlinear, seed)
    s0 = torch.randn(batch, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    # A restart where a schedule would switch: both clear their history there.
    cfg = dataclasses.replace(PLAIN, memory=memory, max_iter=steps, beta=beta, restart_at=(11,))
    seen, _ = fast_iterates(g, s0, cfg)
    assert len(seen) == steps
    for b in range(batch):
        want = textbook_anderson(maps[b], s0[b], memory, steps - 1, cfg.lam, beta, (11,))
        # The premise: the iterates move (Anderson is not standing still at a fixed point).
        assert relative_gap(want[1], want[-1]) > 1e-3
        for k in range(steps):
            assert relative_gap(seen[k][b], want[k]) < 1e-9, (seed, b, k)


@pytest.mark.parametrize("history", ["fp32", "bf16"])
@pytest.mark.parametrize("keep", ["best", "last"])
def test_per_sample_stops_match_the_textbook(history: str, keep: str) -> None:
    """Samples of different rates stop at different iterations, each at the textbook's
    iterate of that index, and are frozen there while the others go on."""
    seed = int(torch.randint(0, 2**31, ()).item())
    rates = [0.3, 0.9, 0.97, 0.6]
    g, maps = contractive_maps(len(rates), 12, rates, True, seed)
    s0 = torch.zeros(len(rates), 12, dtype=torch.float64)
    cfg = dataclasses.replace(
        PLAIN,
        tol=1e-10,
        memory=5,
        max_iter=200,
        keep=keep,
        history=history,  # type: ignore[arg-type]
    )
    seen, result = fast_iterates(g, s0, cfg)
    assert result.converged.all()
    stops = result.iterations.tolist()
    assert min(stops) < max(stops), "the premise: samples stop at different iterations"
    for b, stop in enumerate(stops):
        want = textbook_anderson(maps[b], s0[b], 5, stop - 1, cfg.lam, 1.0)
        # The returned state is the iterate the sample converged at, its residual there...
        state = result.state[b]
        gs = maps[b](state)
        # (Measured afresh to 1 %: g − s cancels all but ~11 digits at this residual,
        # while the neighbouring iterates' residuals differ several-fold.)
        measured = (gs - state).norm() / (gs.norm() + 1e-6 * 12**0.5)
        torch.testing.assert_close(result.residual[b, 0], measured, rtol=1e-2, atol=0.0)
        assert float(measured) <= cfg.tol
        # ...frozen from then on...
        assert all(torch.equal(later[b], seen[stop - 1][b]) for later in seen[stop - 1 :])
        if history == "fp32":
            # ...and the textbook's iterate of that index (the bfloat16 history takes
            # steps that agree only to its precision; its fixed point is checked above).
            assert relative_gap(state, want[stop - 1]) < 1e-8, (seed, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("history", ["fp32", "bf16"])
def test_fixed_points_match_the_textbook(dtype: torch.dtype, history: str) -> None:
    """Every state and history precision reaches the textbook's fixed point."""
    seed = int(torch.randint(0, 2**31, ()).item())
    rates = [0.9, 0.95]
    g, maps = contractive_maps(len(rates), 20, rates, True, seed)
    s0 = torch.zeros(len(rates), 20, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    cfg = SolverConfig(memory=6, tol=tol, max_iter=300, history=history)  # type: ignore[arg-type]
    result = fixed_point_solve(g, s0, cfg)
    assert result.converged.all()
    for b in range(len(rates)):
        want = textbook_anderson(maps[b], s0[b].double(), 6, 60, 1e-10, 1.0)[-1]
        # The premise: the textbook itself has converged far below the tolerance.
        assert relative_gap(maps[b](want), want) < 1e-13
        # A fixed point with relative residual ≤ tol of a contraction of rate ρ lies
        # within tol / (1 − ρ) of the true one (relative); float32 adds its own rounding.
        bound = 1.5 * tol / (1 - rates[b]) + (1e-5 if dtype == torch.float32 else 0.0)
        assert relative_gap(result.state[b].double(), want) < bound, (seed, b)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_returned_residual_is_measured_at_the_returned_state(keep: str) -> None:
    """For converged, failing and unfinished samples alike: a failing sample returns a
    finite iterate and the residual of that iterate, not of the one whose image broke."""
    g, maps = contractive_maps(3, 10, [0.1, 0.9, 0.999], True, seed=5)

    def breaking(s: Tensor, k: Tensor) -> Tensor:
        out = g(s, k)
        out[1] = torch.where(k >= 6, torch.nan, out[1])  # sample 1 fails at iteration 6
        return out

    cfg = SolverConfig(memory=3, tol=1e-10, max_iter=14, keep=keep)  # type: ignore[arg-type]
    result = fixed_point_solve(breaking, torch.zeros(3, 10, dtype=torch.float64), cfg)
    assert result.converged.tolist() == [True, False, False]  # the premise
    assert result.failed.tolist() == [False, True, False]
    for b in range(3):
        state = result.state[b]
        gs = maps[b](state)
        measured = (gs - state).norm() / (gs.norm() + 1e-6 * 10**0.5)
        torch.testing.assert_close(result.residual[b, 0], measured, rtol=1e-2, atol=0.0)
