"""jiio_solve against the naive inner/outer method, constraints, and failure reporting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import TanhCell, adam_reference, quadratic_problem

from jiio_cli.engine import (
    Box,
    InputProblem,
    JIIOConfig,
    L2Ball,
    LinfBall,
    NaiveConfig,
    SolverConfig,
    StepSchedule,
    jiio_solve,
    naive_solve,
)

TIGHT = SolverConfig(memory=10, tol=1e-8, max_iter=400)
INNER = SolverConfig(tol=1e-9, max_iter=100)


@pytest.mark.parametrize(
    ("batch", "history", "x_weight"),
    [(1, "fp32", 1.0), (8, "fp32", 1.0), (8, "bf16", 1.0), (8, "fp32", 10.0), (8, "fp32", 0.3)],
)
def test_jiio_reaches_the_naive_adam_optimum(
    batch: int, history: str, x_weight: float, device: torch.device
) -> None:
    # γ = 1 keeps the reduced objective's minimiser unique: with weaker regularisation
    # about 1 draw in 80 has a second stationary point, which any method may reach.
    problem, _, _ = quadratic_problem(batch, gamma=1.0, device=device)
    solver = dataclasses.replace(TIGHT, history=history)
    result = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=solver, x_weight=x_weight))
    assert result.converged.all()
    for residual in (result.residual_z, result.residual_mu, result.residual_x):
        assert (residual <= TIGHT.tol).all()

    naive = naive_solve(problem, adam_reference(400, INNER))
    rel = (result.x - naive.x).norm(dim=1) / naive.x.norm(dim=1)
    assert rel.max() < 1e-3
    assert torch.allclose(result.objective, naive.objective, rtol=1e-6)
    # JIIO's answer is self-consistent: z is the fixed point at the returned x.
    z_check = problem.cell(result.z, result.x)
    assert ((z_check - result.z).norm(dim=1) / z_check.norm(dim=1)).max() < 1e-6
    assert (result.objective == problem.objective(result.z, result.x)).all()


def test_jiio_statistics_are_consistent(device: torch.device) -> None:
    problem, _, _ = quadratic_problem(4, device=device)
    cfg = JIIOConfig(alpha_x=StepSchedule(0.5, 0.3, switch_at=20), solver=TIGHT)
    result = jiio_solve(problem, cfg)
    # The batch stops at the first host check after its last sample converged: on the
    # CPU right then, elsewhere within check_every iterations.
    longest = int(result.iterations.max())
    every = 1 if device.type == "cpu" else TIGHT.check_every
    assert longest <= result.trace.shape[0] < longest + every
    assert (result.f_evals > result.iterations).all() and (result.vjps > result.iterations).all()
    assert result.batch_f_evals >= int(result.f_evals.max())
    assert result.converged.all() and not result.failed.any()
    # The objective trace ends near the optimum.
    assert abs(float(result.trace[-1]) - float(result.objective.mean())) < 1e-6


def test_x_weight_changes_the_iterates_not_the_answer(device: torch.device) -> None:
    problem, _, _ = quadratic_problem(4, gamma=1.0, device=device)
    plain = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=TIGHT))
    weighted = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=TIGHT, x_weight=10.0))
    assert plain.converged.all() and weighted.converged.all()
    # Anderson mixes differently (its least squares weighs x more) ...
    assert not torch.equal(plain.iterations, weighted.iterations) or not torch.equal(
        plain.trace, weighted.trace
    )
    # ... towards the same stationary point, reported unweighted.
    assert torch.allclose(weighted.x, plain.x, rtol=1e-4, atol=1e-6)
    assert torch.allclose(weighted.objective, plain.objective, rtol=1e-8)


def test_without_refining_the_adjoint_x_and_z_are_the_same(device: torch.device) -> None:
    seed = int(torch.randint(0, 2**31, ()).item())
    problem, _, _ = quadratic_problem(5, gamma=1.0, device=device, seed=seed)
    # A budget that stops the loop short, so the loop's μ is not yet the adjoint.
    short = SolverConfig(memory=5, tol=1e-12, max_iter=12)
    refined = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=short))
    kept = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=short, refine_adjoint=False))
    # The loop, the returned x and the re-solved z* are the same computation ...
    assert torch.equal(kept.x, refined.x) and torch.equal(kept.z, refined.z)
    assert torch.equal(kept.objective, refined.objective)
    assert torch.equal(kept.residual_z, refined.residual_z)
    # ... but μ is the loop's, unrefined, and judged (by one VJP) where it is.
    assert (kept.vjps == kept.iterations + 1).all()
    assert (refined.vjps > kept.vjps).all()
    assert (kept.residual_mu > refined.residual_mu).all()
    assert not kept.converged.any()
    # With a loop that converges, the loop's μ is good enough to pass at the same tolerance.
    done = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=TIGHT, refine_adjoint=False))
    assert done.converged.all()


@pytest.mark.parametrize("x_weight", [0.0, -1.0, float("nan")])
def test_x_weight_must_be_positive(x_weight: float) -> None:
    with pytest.raises(ValueError, match="x_weight"):
        JIIOConfig(x_weight=x_weight)


def test_step_schedule_switches_where_the_paper_does() -> None:
    sched = StepSchedule(0.6, 0.2)
    assert sched.switch_iteration(100) == 62
    assert sched.switch_iteration(40) is None
    assert sched.value(61, 100) == 0.6 and sched.value(62, 100) == 0.2
    assert StepSchedule(0.1).switch_iteration(100) is None


@settings(max_examples=25, deadline=None)
@given(
    eps=st.floats(0.0, 3.0, allow_nan=False),
    norm=st.sampled_from(["l2", "linf"]),
    alpha=st.floats(0.05, 3.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_jiio_returns_points_inside_the_ball(eps: float, norm: str, alpha: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(6, 4, generator=gen, dtype=torch.float64)
    box = Box(0.0, 1.0)
    ball = L2Ball(center, eps, box) if norm == "l2" else LinfBall(center, eps, box)
    rule = "l2" if norm == "l2" else "sign"
    problem, _, _ = quadratic_problem(
        6, constraint=RecordingConstraint(ball), step_rule=rule, seed=seed
    )
    problem.x0 = center + torch.randn(6, 4, generator=gen, dtype=torch.float64)
    cfg = JIIOConfig(alpha_x=alpha, solver=SolverConfig(memory=5, max_iter=30, tol=1e-6))
    result = jiio_solve(problem, cfg)
    dist = result.x - center
    size = dist.norm(dim=1) if norm == "l2" else dist.abs().amax(dim=1)
    assert (size <= eps).all()
    assert result.x.min() >= 0 and result.x.max() <= 1
    # The returned z belongs to the returned x, not to an unprojected Anderson iterate.
    z_check = problem.cell(result.z, result.x)
    assert ((z_check - result.z).norm(dim=1) <= 1e-4 * z_check.norm(dim=1) + 1e-9).all()


class RecordingConstraint:
    """Wraps a constraint and remembers the largest violation it was asked to repair."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.worst = 0.0

    def project(self, x: torch.Tensor) -> torch.Tensor:
        self.worst = max(self.worst, float(self.inner.violation(x).max()))
        return self.inner.project(x)

    def violation(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.violation(x)


def test_anderson_extrapolation_outside_the_ball_is_projected_back() -> None:
    seed = int(torch.randint(0, 2**31, ()).item())
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(8, 4, generator=gen, dtype=torch.float64)
    ball = RecordingConstraint(L2Ball(center, 0.05, Box()))
    problem, _, _ = quadratic_problem(8, constraint=ball, step_rule="l2", seed=seed)
    problem.x0 = center.clone()
    seen: list[float] = []

    def watch(x: torch.Tensor) -> torch.Tensor:
        seen.append(float(ball.inner.violation(x).max()))
        return ball.inner.project(x)

    ball.project = watch  # every x handed to the projection, Anderson iterates included
    result = jiio_solve(problem, JIIOConfig(alpha_x=0.5, solver=SolverConfig(max_iter=40)))
    assert max(seen) > 0, "the test must exercise points outside the ball"
    assert ((result.x - center).norm(dim=1) <= 0.05).all()


class ExpansiveCell(torch.nn.Module):
    """f(z, x) = 1.5 tanh(3 W z) + x with ‖W‖ = 1: no contraction, oscillating iterates."""

    def __init__(self, dz: int) -> None:
        super().__init__()
        w = torch.randn(dz, dz, dtype=torch.float64)
        self.weight = torch.nn.Parameter(3.0 * w / torch.linalg.matrix_norm(w, ord=2))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 1.5 * torch.tanh(z @ self.weight.T) + x


class NaNCell(torch.nn.Module):
    """A contractive cell that returns NaN for the samples flagged in ``bad`` (B,)."""

    def __init__(self, dz: int, dx: int, bad: torch.Tensor) -> None:
        super().__init__()
        self.inner = TanhCell(dz, dx, 0.5)
        self.bad = bad

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(z, x)
        return torch.where(self.bad[:, None], torch.full_like(out, torch.nan), out)


def _diverging_problem(kind: str) -> InputProblem:
    batch, dz = 4, 6
    x0 = 0.1 * torch.randn(batch, dz, dtype=torch.float64)
    if kind == "expansive":
        cell = ExpansiveCell(dz)
    else:
        cell = NaNCell(dz, dz, torch.tensor([False, True, False, True]))

    def objective(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z - 0.3).pow(2).sum(dim=1) + 0.05 * x.pow(2).sum(dim=1)

    return InputProblem(cell, objective, torch.zeros(batch, dz, dtype=torch.float64), x0)


@pytest.mark.parametrize("kind", ["expansive", "nan"])
def test_diverging_problems_are_reported_not_raised(kind: str) -> None:
    problem = _diverging_problem(kind)
    # 500 iterations: at 200, about 1 random draw in 60 leaves a healthy row just above
    # the tolerance, and this test is about the failing rows.
    cfg = JIIOConfig(alpha_x=0.3, solver=SolverConfig(max_iter=500, tol=1e-6))
    for result in (
        jiio_solve(problem, cfg),
        naive_solve(
            problem,
            NaiveConfig(
                steps=5, forward=SolverConfig(max_iter=30), adjoint=SolverConfig(max_iter=30)
            ),
        ),
    ):
        if kind == "expansive":
            assert not result.converged.any()
            assert (torch.stack([result.residual_z, result.residual_mu]).amax(0) > 1e-8).all()
        else:
            if result.method == "jiio":
                assert result.converged.tolist() == [True, False, True, False]
            assert not result.converged[[1, 3]].any()
            assert torch.isinf(result.residual_z[[1, 3]]).all()
            assert result.failed[[1, 3]].all() and not result.failed[[0, 2]].any()
            assert torch.isfinite(result.x[[0, 2]]).all()


def _literal_residuals(s, gs, nz, nx, a_z, a_mu, w):
    """The augmented map's block residuals written out plainly."""

    def relative(delta: torch.Tensor, new: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return delta.norm(dim=1) / (new.norm(dim=1) + scale * 1e-6 * delta.shape[1] ** 0.5)

    dz, dx, dmu = torch.split(gs - s, [nz, nx, nz], dim=1)
    z, _, mu = torch.split(s, [nz, nx, nz], dim=1)
    x_new = torch.split(gs, [nz, nx, nz], dim=1)[1]
    return torch.stack(
        [
            relative(dz / a_z, z + dz / a_z),
            relative(dmu / a_mu, mu + dmu / a_mu),
            relative(dx, x_new, w),
        ],
        dim=1,
    )


@pytest.mark.parametrize("x_weight", [1.0, 10.0])
def test_augmented_residuals_are_those_of_the_undamped_steps(x_weight: float) -> None:
    from jiio_cli.engine.jiio import augmented_residuals

    nz, nx = 30, 7
    s = torch.randn(5, 2 * nz + nx, dtype=torch.float64)
    gs = s + 0.1 * torch.randn_like(s)
    gs[0] = s[0]  # a converged row: zero residuals
    gs[1, nz : nz + nx] = 0.0  # an x step that lands on 0: the floor keeps it finite
    got = augmented_residuals(s, gs, (nz, nx), 0.8, 0.6, x_weight)
    want = _literal_residuals(s, gs, nz, nx, 0.8, 0.6, x_weight)
    assert torch.allclose(got, want, rtol=1e-12, atol=0.0)
    # The difference handed in by the solver gives the same residuals.
    assert torch.equal(augmented_residuals(s, gs, (nz, nx), 0.8, 0.6, x_weight, gs - s), got)
    assert (got[0] == 0).all() and torch.isfinite(got).all()


def _literal_jiio_loop(problem: InputProblem, cfg: JIIOConfig):
    """The augmented map written out plainly (fresh tensors, packed by concatenation),
    solved by the same fixed-point loop with the same residuals: JIIO's loop."""
    from jiio_cli.engine import fixed_point_solve, lagrangian_grads

    z0, x0 = problem.z0, problem.x0
    nz, nx = z0.shape[1], x0.shape[1]
    w, a_z, a_mu = cfg.x_weight, cfg.alpha_z, cfg.alpha_mu
    alpha = float(cfg.alpha_x)  # type: ignore[arg-type]

    def augmented(s: torch.Tensor, _k: torch.Tensor) -> torch.Tensor:
        z, xw, mu = torch.split(s, [nz, nx, nz], dim=1)
        fz, _, gz, gx = lagrangian_grads(problem.cell, problem.objective, z, xw / w, mu)
        x_new = xw / w - alpha * gx
        return torch.cat([z + a_z * (fz - z), w * x_new, mu + a_mu * (gz - mu)], dim=1)

    def residuals(s: torch.Tensor, gs: torch.Tensor, _d: torch.Tensor) -> torch.Tensor:
        return _literal_residuals(s, gs, nz, nx, a_z, a_mu, w)

    s0 = torch.cat([z0, w * x0, torch.zeros_like(z0)], dim=1)
    loop_cfg = dataclasses.replace(cfg.solver, tol=0.1 * cfg.solver.tol)
    return fixed_point_solve(augmented, s0, loop_cfg, residuals)


@pytest.mark.parametrize("x_weight", [1.0, 10.0])
def test_jiio_loop_equals_the_literal_augmented_map(x_weight: float, device: torch.device):
    # jiio_solve writes the map into one reused buffer: the iterates must be those of the
    # plain formulas, up to rounding (25 iterations, no stopping, float64). Not more: near
    # convergence Anderson's least squares turns ill-conditioned and amplifies rounding, so
    # that two correct orders of the same sums part by more than 1e-8 after about 40
    # iterations on some draws and CPU kernels; after 25 they agree to about 1e-11.
    problem, _, _ = quadratic_problem(6, gamma=1.0, device=device)
    solver = SolverConfig(memory=5, tol=1e-30, max_iter=25)
    cfg = JIIOConfig(alpha_x=0.3, solver=solver, x_weight=x_weight)
    literal = _literal_jiio_loop(problem, cfg)
    nz, nx = problem.z0.shape[1], problem.x0.shape[1]
    x_ref = torch.split(literal.state, [nz, nx, nz], dim=1)[1] / x_weight
    result = jiio_solve(problem, cfg)
    assert torch.allclose(result.x, x_ref, rtol=1e-8, atol=1e-10)
