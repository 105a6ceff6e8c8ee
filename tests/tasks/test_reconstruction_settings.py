"""The latent step of reconstruction: a larger α_x for the first iterations, then α_x."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from problems import quadratic_problem
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.engine import JIIOConfig, SolverConfig, StepSchedule, jiio_solve
from jiio_cli.tasks.inverse.defaults import (
    RECONSTRUCTION_START_ALPHA_X,
    RECONSTRUCTION_START_ITERATIONS,
)
from jiio_cli.tasks.inverse.problems import reconstruction_alpha_x, reconstruction_settings

runner = CliRunner(env={"NO_COLOR": "1"})


def test_no_start_phase_gives_a_constant_step() -> None:
    assert reconstruction_alpha_x(0.02, None, 30) == 0.02
    assert reconstruction_alpha_x(0.02, 0.02, 30) == 0.02
    assert reconstruction_alpha_x(0.02, 0.06, 0) == 0.02
    with pytest.raises(ValueError, match="start_iterations"):
        reconstruction_alpha_x(0.02, 0.06, -1)


def test_default_settings_start_large_then_switch_with_a_fresh_history() -> None:
    jiio = reconstruction_settings(100).jiio
    schedule = jiio.schedule
    assert isinstance(jiio.alpha_x, StepSchedule) and jiio.restart_on_switch
    assert schedule.switch_iteration(100) == RECONSTRUCTION_START_ITERATIONS == 30
    assert schedule.value(29, 100) == RECONSTRUCTION_START_ALPHA_X == 0.06
    assert schedule.value(30, 100) == 0.02
    # A budget within the start phase runs at the start step throughout.
    assert reconstruction_settings(20).jiio.schedule.value(19, 20) == 0.06


def test_the_start_phase_leaves_the_solution_unchanged() -> None:
    """Same stationary point with and without a start phase (fresh random problems whose
    reduced objective has one minimiser), and the start phase does change the path."""
    problem, _, _ = quadratic_problem(6, gamma=1.0)
    solver = SolverConfig(memory=10, tol=1e-9, max_iter=400)
    results = {}
    for start in (None, 1.5):
        alpha = reconstruction_alpha_x(0.5, start, 30)
        results[start] = jiio_solve(problem, JIIOConfig(alpha_x=alpha, solver=solver))
    assert all(bool(r.converged.all()) for r in results.values())
    assert not torch.equal(results[None].trace[:30], results[1.5].trace[:30])
    torch.testing.assert_close(results[1.5].x, results[None].x, atol=1e-7, rtol=0)


def test_the_command_and_the_bench_default_to_the_librarys_settings() -> None:
    """``jiio reconstruct``, ``jiio bench --task reconstruct`` and the library share one
    set of solver defaults (a literal written into any of them breaks this)."""
    from jiio_cli.bench.reconstruct import ReconstructBenchConfig
    from jiio_cli.cli.commands.reconstruct import reconstruct

    names = ("alpha_x", "alpha_x_start", "start_iterations", "memory", "x_weight")
    library = inspect.signature(reconstruction_settings).parameters
    command = inspect.signature(reconstruct).parameters
    bench = ReconstructBenchConfig()
    for name in names:
        assert command[name].default == library[name].default == getattr(bench, name), name


def test_bench_start_options_reach_the_solve() -> None:
    args = ["bench", "--task", "reconstruct", "--batch-size", "2", "--naive-steps", "2"]
    args += ["--device", "cpu", "--json"]
    docs = {}
    for start in ("0.06", "0.02"):
        result = runner.invoke(app, [*args, "--alpha-x-start", start])
        assert result.exit_code == 0, result.output
        docs[start] = json.loads(result.stdout)
    assert docs["0.06"]["jiio_alpha_x_start"] == 0.06
    assert docs["0.06"]["jiio_start_iterations"] == 30
    # The budget search tries 10 iterations on both; those runs differ only in α_x.
    at_ten = {
        k: next(r for r in d["speed"]["jiio"]["runs"] if r["iterations"] == 10)
        for k, d in docs.items()
    }
    assert at_ten["0.06"]["objective"] != at_ten["0.02"]["objective"]


def test_bench_start_options_are_for_reconstruct_only() -> None:
    result = runner.invoke(app, ["bench", "--task", "attack", "--start-iterations", "5"])
    assert result.exit_code != 0
    assert (
        "--start-iterations does not apply to --task attack (it is for --task reconstruct)"
        in result.output
    )


def test_codes_without_the_adjoint_re_solve_are_the_same() -> None:
    """``refine_adjoint=False`` (the density and range-error fits, the quality table):
    the same latent codes and decoded images on the shipped decoder, fewer VJPs."""
    from jiio_cli.data import load_mnist5k
    from jiio_cli.tasks.inverse.problems import reconstruct
    from jiio_cli.tasks.loading import load_decoder

    decoder, _ = load_decoder(None, torch.device("cpu"))
    clean = load_mnist5k("heldout")[0][:3]
    known = (torch.rand(3, 1, 28, 28) > 0.3).float()
    results = {}
    for refine in (True, False):
        settings = reconstruction_settings(40, refine_adjoint=refine)
        assert settings.jiio.refine_adjoint is refine
        results[refine] = reconstruct(decoder, clean * known, known, settings)
    (images, full), (images_kept, kept) = results[True], results[False]
    assert torch.equal(kept.x, full.x) and torch.equal(images_kept, images)
    assert (kept.vjps < full.vjps).all()
