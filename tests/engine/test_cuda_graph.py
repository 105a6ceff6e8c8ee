"""CUDA-graph replay of solver iterations: same answers as eager execution.

On the CPU ``graph=True`` is ignored, so these tests check that the flag changes nothing
there; on a GPU (the same tests, ``device`` = cuda) they check that the loop really was
captured and replayed and that it reproduces the eager solve.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from problems import quadratic_problem
from test_anderson import linear_map

from jiio_cli.engine import (
    Box,
    InputProblem,
    JIIOConfig,
    SolverConfig,
    StepSchedule,
    anderson_weights,
    fixed_point_solve,
    jiio_solve,
)
from jiio_cli.engine.anderson import cholesky_solve_unrolled


def _random_spd(batch: int, m: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(batch, m, m, generator=gen, dtype=torch.float64)
    return a @ a.transpose(1, 2) + 0.1 * torch.eye(m, dtype=torch.float64)


@pytest.mark.parametrize("m", [1, 2, 5, 20])
def test_unrolled_cholesky_solves_spd_systems(m: int) -> None:
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    h = _random_spd(6, m, gen)
    rhs = torch.randn(6, m, generator=gen, dtype=torch.float64)
    y, ok = cholesky_solve_unrolled(h, rhs)
    assert ok.all()
    expected = torch.linalg.solve(h, rhs)
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-9)


def test_unrolled_cholesky_flags_indefinite_matrices() -> None:
    h = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    h[1, 2, 2] = -1.0
    _, ok = cholesky_solve_unrolled(h, torch.ones(2, 3, dtype=torch.float64))
    assert ok.tolist() == [True, False]


def test_unrolled_anderson_weights_equal_the_library_ones() -> None:
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    m = 7
    g = torch.randn(5, m, 30, generator=gen, dtype=torch.float64)
    gram = g @ g.transpose(1, 2)
    valid = torch.rand(5, m, generator=gen) < 0.7
    valid[:, 0] = True
    fallback = torch.eye(m, dtype=torch.float64)[0]
    library = anderson_weights(gram, valid, fallback, 1e-4)
    unrolled = anderson_weights(gram, valid, fallback, 1e-4, unrolled=True)
    torch.testing.assert_close(unrolled, library, rtol=1e-8, atol=1e-10)
    assert torch.allclose(unrolled.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert (unrolled[~valid] == 0).all()


@pytest.mark.parametrize(
    ("method", "history"), [("anderson", "fp32"), ("anderson", "bf16"), ("picard", "fp32")]
)
def test_graph_replay_gives_the_eager_fixed_point(
    method: str, history: str, device: torch.device
) -> None:
    seed = int(torch.randint(0, 2**31, ()).item())
    g, solution = linear_map(4, 30, [0.3, 0.8, 0.9, 0.95], device, seed)
    s0 = torch.zeros(4, 30, dtype=torch.float64, device=device)
    cfg = SolverConfig(
        method=method, memory=5, tol=1e-9, max_iter=500, restart_at=(7,), history=history
    )  # type: ignore[arg-type]
    eager = fixed_point_solve(g, s0, cfg)
    graphed = fixed_point_solve(g, s0, dataclasses.replace(cfg, graph=True))
    assert graphed.graph == (device.type == "cuda"), graphed.graph_failure
    assert eager.converged.all() and graphed.converged.all()
    if history == "fp32":
        assert graphed.iterations.tolist() == eager.iterations.tolist()
        assert graphed.steps == eager.steps
        torch.testing.assert_close(graphed.state, eager.state, rtol=1e-10, atol=1e-12)
    # (With a bfloat16 history the graph's unrolled Cholesky and the library's can round
    # a coefficient to different bfloat16 neighbours, so the paths may part slightly.)
    for result in (eager, graphed):
        error = (result.state - solution).norm(dim=1) / solution.norm(dim=1)
        assert error.max() < 1e-6


def test_graph_replay_gives_the_eager_jiio_solution(device: torch.device) -> None:
    problem, _, _ = quadratic_problem(5, device=device)
    problem = InputProblem(
        problem.cell, problem.objective, problem.z0, problem.x0, constraint=Box(-0.5, 0.5)
    )
    cfg = JIIOConfig(
        alpha_x=StepSchedule(0.5, 0.2, switch_at=20),
        solver=SolverConfig(memory=10, tol=1e-7, max_iter=120),
        snapshot_at=4,
    )
    eager = jiio_solve(problem, cfg)
    graphed = jiio_solve(
        problem, dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, graph=True))
    )
    assert graphed.graph == (device.type == "cuda"), graphed.graph_failure
    assert graphed.iterations.tolist() == eager.iterations.tolist()
    torch.testing.assert_close(graphed.x, eager.x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(graphed.objective, eager.objective, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(graphed.trace, eager.trace, rtol=1e-5, atol=1e-6)
    assert eager.snapshot is not None and graphed.snapshot is not None
    for a, b in zip(graphed.snapshot, eager.snapshot, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
