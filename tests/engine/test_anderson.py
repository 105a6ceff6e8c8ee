"""Fixed-point solvers: acceleration, per-sample freezing, failure reporting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from jiio_cli.engine import SolverConfig, anderson_weights, fixed_point_solve
from jiio_cli.engine import anderson as anderson_module
from jiio_cli.engine.anderson import anderson_coefficients

HISTORIES = ["fp32", "bf16"]


def linear_map(batch: int, n: int, rates: list[float], device: torch.device, seed: int):
    """g(s) = A_b s + c_b, A_b symmetric with eigenvalues spread over [-r_b, r_b].

    The largest eigenvalue r_b = rates[b] sets plain iteration's rate (≈ r_b per step).
    """
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, n, n, generator=gen, dtype=torch.float64))
    spread = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    eig = spread[None, :] * torch.tensor(rates, dtype=torch.float64)[:, None]
    a = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    c = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    a, c = a.to(device), c.to(device)

    def g(s: torch.Tensor, _k: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bj->bi", a, s) + c

    solution = torch.linalg.solve(torch.eye(n, dtype=a.dtype, device=device) - a, c)
    return g, solution


@pytest.mark.parametrize("history", HISTORIES)
def test_anderson_beats_picard_on_contractive_linear_map(
    device: torch.device, history: str
) -> None:
    seed = int(torch.randint(0, 2**31, ()).item())
    g, solution = linear_map(4, 40, [0.95] * 4, device, seed)
    s0 = torch.zeros(4, 40, dtype=torch.float64, device=device)
    # 1e-8 is far below what a bfloat16 history could hold as absolute states (~1e-3):
    # the difference form must still get there.
    tol = 1e-8
    cfg = SolverConfig(memory=10, tol=tol, max_iter=1000, history=history)  # type: ignore[arg-type]
    anderson = fixed_point_solve(g, s0, cfg)
    picard = fixed_point_solve(g, s0, SolverConfig(method="picard", tol=tol, max_iter=1000))
    assert anderson.converged.all() and picard.converged.all()
    assert (anderson.iterations < picard.iterations).all()
    assert anderson.iterations.max() * 3 < picard.iterations.min()
    for result in (anderson, picard):
        err = (result.state - solution).norm(dim=1) / solution.norm(dim=1)
        assert err.max() < 1e-6


@pytest.mark.parametrize("history", ["fp32", "bf16"])
def test_converged_sample_is_frozen_bit_identically(device: torch.device, history: str) -> None:
    seed = int(torch.randint(0, 2**31, ()).item())
    rates = [0.2, 0.9, 0.95, 0.97]
    g, _ = linear_map(4, 30, rates, device, seed)
    s0 = torch.zeros(4, 30, dtype=torch.float64, device=device)
    for method in ("anderson", "picard"):
        cfg = SolverConfig(
            method=method, memory=5, tol=1e-9, max_iter=2000, check_every=3, history=history
        )  # type: ignore[arg-type]
        full = fixed_point_solve(g, s0, cfg)
        assert full.converged.all()
        k0 = int(full.iterations[0])
        assert k0 < int(full.iterations[1:].min()), "sample 0 must converge first"
        # Same batch, but the whole batch stops the moment sample 0 converges.
        cut = fixed_point_solve(g, s0, dataclasses.replace(cfg, max_iter=k0))
        assert bool(cut.converged[0]) and not bool(cut.converged[1:].any())
        assert torch.equal(cut.state[0], full.state[0])
        assert torch.equal(cut.residual[0], full.residual[0])


@pytest.mark.parametrize("history", ["fp32", "bf16"])
def test_nan_and_divergence_are_reported_not_raised(device: torch.device, history: str) -> None:
    g, _ = linear_map(3, 10, [0.5, 0.5, 0.5], device, 0)

    def broken(s: torch.Tensor, k: int) -> torch.Tensor:
        out = g(s, k)
        # Sample 1 produces NaN from iteration 3 on; sample 2 has no fixed point (e^s > s).
        out[1] = torch.where(k >= 3, torch.nan, out[1])
        out[2] = torch.exp(s[2])
        return out

    s0 = torch.zeros(3, 10, dtype=torch.float64, device=device)
    cfg = SolverConfig(tol=1e-10, max_iter=60, history=history)  # type: ignore[arg-type]
    res = fixed_point_solve(broken, s0, cfg)
    assert res.converged.tolist() == [True, False, False]
    assert res.failed[1] and not res.failed[0]
    assert torch.isfinite(res.state).all(), "the best finite iterate is returned"
    assert torch.isfinite(res.residual[0]).all() and (res.residual[2] > 1e-3).all()


def test_anderson_weights_sum_to_one_and_ignore_empty_slots() -> None:
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    hist = torch.randn(5, 6, 20, generator=gen, dtype=torch.float64)
    gram = hist @ hist.transpose(1, 2)
    valid = (torch.arange(6) < 4).expand(5, 6)
    alpha = anderson_weights(gram, valid, torch.eye(6, dtype=torch.float64)[3], lam=1e-6)
    assert torch.allclose(alpha.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert (alpha[:, 4:] == 0).all()
    # Unregularised optimum of min ‖Σα G‖ s.t. Σα = 1, from the KKT system directly.
    h = gram[:, :4, :4]
    kkt = torch.zeros(5, 5, 5, dtype=torch.float64)
    kkt[:, :4, :4] = h
    kkt[:, :4, 4] = 1
    kkt[:, 4, :4] = 1
    rhs = torch.zeros(5, 5, dtype=torch.float64)
    rhs[:, 4] = 1
    exact = torch.linalg.solve(kkt, rhs)[:, :4]
    assert torch.allclose(alpha[:, :4], exact, atol=1e-3)


def test_singular_gram_falls_back_to_plain_step() -> None:
    gram = torch.zeros(2, 3, 3, dtype=torch.float64)
    fallback = torch.eye(3, dtype=torch.float64)[1]
    alpha = anderson_weights(gram, torch.ones(2, 3, dtype=torch.bool), fallback, lam=1e-4)
    assert torch.equal(alpha, torch.tensor([[0.0, 1.0, 0.0]] * 2, dtype=torch.float64))


def test_difference_coefficients_solve_the_unconstrained_least_squares() -> None:
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    dg = torch.randn(3, 5, 30, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 30, generator=gen, dtype=torch.float64)
    valid = (torch.arange(5) < 3).expand(3, 5)
    gram, rhs = dg @ dg.transpose(1, 2), torch.einsum("bmn,bn->bm", dg, g)
    gamma = anderson_coefficients(gram, rhs, valid, lam=0.0)
    assert (gamma[:, 3:] == 0).all()
    exact = torch.linalg.lstsq(dg[:, :3].transpose(1, 2), g.unsqueeze(-1)).solution[..., 0]
    torch.testing.assert_close(gamma[:, :3], exact)


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_difference_form_takes_the_same_steps_as_the_constrained_form(beta: float) -> None:
    """In exact arithmetic the two Type-II forms agree: m differences = m + 1 pairs.

    With an unregularised, well-conditioned problem and a bfloat16 history the iterates
    agree to the history's precision after the same number of steps.
    """
    seed = int(torch.randint(0, 2**31, ()).item())
    g, _ = linear_map(2, 12, [0.9, 0.9], torch.device("cpu"), seed)
    s0 = torch.zeros(2, 12, dtype=torch.float64)
    common = {"tol": 1e-30, "max_iter": 4, "lam": 0.0, "beta": beta, "keep": "last"}
    pairs = fixed_point_solve(g, s0, SolverConfig(memory=4, **common))  # type: ignore[arg-type]
    diffs = fixed_point_solve(g, s0, SolverConfig(memory=3, history="bf16", **common))  # type: ignore[arg-type]
    scale = pairs.state.norm(dim=1, keepdim=True)
    assert ((diffs.state - pairs.state).abs() / scale).max() < 2e-2


@pytest.mark.parametrize("width", [50, 64, 1001])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_all_finite_agrees_with_the_elementwise_test(dtype: torch.dtype, width: int) -> None:
    from jiio_cli.engine import all_finite

    big = torch.finfo(dtype).max
    rows = torch.randn(9, width).to(dtype)
    spot = torch.randint(width, (4,)).tolist()
    rows[1, spot[0]] = float("nan")
    rows[2, spot[1]] = float("inf")
    rows[3, spot[2]] = -float("inf")
    rows[4, 1], rows[4, 2] = float("inf"), -float("inf")  # their sum is NaN
    rows[5] = big  # finite entries whose plain sum overflows the dtype itself
    rows[6] = -big
    rows[7, : width // 2] = big
    rows[7, width // 2 :] = -big
    rows[8, spot[3]] = big
    expected = torch.isfinite(rows).all(dim=1)
    assert torch.equal(all_finite(rows), expected)
    assert expected.tolist() == [True, False, False, False, False, True, True, True, True]


def test_a_map_may_return_the_same_buffer_every_call(device: torch.device) -> None:
    g, solution = linear_map(4, 12, [0.9, 0.5, 0.95, 0.7], device, seed=3)
    buffer = torch.empty(4, 12, dtype=torch.float64, device=device)

    def g_in_place(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return buffer.copy_(g(s, k))

    for history in HISTORIES:
        cfg = SolverConfig(memory=5, tol=1e-10, max_iter=200, history=history)
        fresh = fixed_point_solve(g, torch.zeros_like(buffer), cfg)
        reused = fixed_point_solve(g_in_place, torch.zeros_like(buffer), cfg)
        assert torch.equal(fresh.state, reused.state)
        assert torch.equal(fresh.iterations, reused.iterations)
        assert torch.allclose(reused.state, solution, atol=1e-8)


def reference_anderson(g, s0: torch.Tensor, memory: int, evaluations: int, lam: float, beta: float):
    """Type-II Anderson written out plainly (lists of the last m pairs, a fresh least
    squares each step); returns the iterate of the last evaluation, as keep="last" does."""
    s = s0.clone()
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for k in range(evaluations):
        gs = g(s, torch.tensor(k))
        if k == evaluations - 1:
            return s
        pairs = [*pairs, (gs, gs - s)][-memory:]
        gm = torch.stack([p[0] for p in pairs], dim=1)  # (B, j, N)
        fm = torch.stack([p[1] for p in pairs], dim=1)
        h = fm @ fm.transpose(1, 2)
        reg = lam * torch.diagonal(h, dim1=1, dim2=2).mean(dim=1)
        h = h + reg[:, None, None] * torch.eye(len(pairs), dtype=h.dtype)
        y = torch.linalg.solve(h, torch.ones(h.shape[:2], dtype=h.dtype))
        alpha = y / y.sum(dim=1, keepdim=True)
        s = torch.einsum("bj,bjn->bn", alpha, beta * gm + (1 - beta) * (gm - fm))
    return s


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_iterates_match_a_plain_reference_after_the_history_wraps(beta: float) -> None:
    # 23 evaluations with memory 4: the history's slots are reused five times over, so a
    # slot written in one place and read from another would show.
    seed = int(torch.randint(0, 2**31, ()).item())
    g, _ = linear_map(3, 30, [0.97, 0.9, 0.99], torch.device("cpu"), seed)
    s0 = torch.zeros(3, 30, dtype=torch.float64)
    cfg = SolverConfig(
        memory=4, tol=1e-30, max_iter=23, lam=1e-8, beta=beta, keep="last", patience=0, blowup=1e30
    )
    got = fixed_point_solve(g, s0, cfg).state
    want = reference_anderson(g, s0, memory=4, evaluations=23, lam=1e-8, beta=beta)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_cpu_buffer_swaps_equal_the_row_selections(
    monkeypatch: pytest.MonkeyPatch, history: str, keep: str
) -> None:
    # On the CPU the loop reads the masks on the host and swaps buffers while every
    # sample is active; elsewhere it selects rows on the device. Both must give the same
    # bits, on a map whose residuals rise and fall (so some rows improve and others not)
    # and whose samples stop at different iterations.
    seed = int(torch.randint(0, 2**31, ()).item())
    gen = torch.Generator().manual_seed(seed)
    batch, n = 5, 24
    w = 1.6 * torch.randn(batch, n, n, generator=gen, dtype=torch.float64) / n**0.5
    c = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    scale = torch.tensor([0.5, 0.8, 1.0, 1.0, 1.0], dtype=torch.float64)[:, None, None]

    # All but the first two samples get a perturbation that changes with k: their
    # residuals stall and jitter, so their best iterates come from scattered iterations.
    jitter = torch.tensor([0.0, 0.0, 1e-5, 1e-3, 1e-2], dtype=torch.float64)[:, None]
    phase = torch.randn(batch, n, generator=gen, dtype=torch.float64)

    def g(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        wobble = jitter * torch.sin(1.7 * k.to(s.dtype) + phase)
        return torch.tanh(torch.einsum("bij,bj->bi", scale * w, s)) + c + wobble

    patterns: list[tuple[bool, bool]] = []
    safeguard = anderson_module._SolverLoop._safeguard

    def spy(self, score: torch.Tensor, improved: torch.Tensor) -> None:
        patterns.append((bool(improved.all()), bool(improved.any())))
        safeguard(self, score, improved)

    monkeypatch.setattr(anderson_module._SolverLoop, "_safeguard", spy)
    cfg = SolverConfig(memory=4, tol=1e-9, max_iter=80, keep=keep, history=history)  # type: ignore[arg-type]
    s0 = torch.zeros(batch, n, dtype=torch.float64)
    swapped = fixed_point_solve(g, s0, cfg)
    init = anderson_module._SolverLoop.__init__

    def on_the_device(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.host_masks = False

    monkeypatch.setattr(anderson_module._SolverLoop, "__init__", on_the_device)
    selected = fixed_point_solve(g, s0, cfg)
    assert torch.equal(swapped.state, selected.state)
    assert torch.equal(swapped.residual, selected.residual)
    assert torch.equal(swapped.iterations, selected.iterations)
    assert torch.equal(swapped.converged, selected.converged)
    # The comparison covered iterations where some rows improved and others did not,
    # and samples that stopped before others.
    assert any(part and not every for every, part in patterns)
    assert swapped.iterations.min() < swapped.iterations.max()
