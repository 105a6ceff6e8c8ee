"""Sinusoid meta-regression: the regressor, adaptation, meta-gradients, training and the CLI.

The gradient checks run in float64 on a tiny model with tight solver tolerances and compare
directional derivatives against central finite differences with every fixed point
re-solved. Seeds are fixed: the support problem is not convex in v (FiLM), and a seed
that lands JIIO on a different stationary point than Adam would make a test flaky.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from parameter_directions import directional_derivative, perturbed
from problems import adam_reference
from torch import Tensor
from typer.testing import CliRunner

from jiio_cli.checkpoint import load_checkpoint, save_checkpoint
from jiio_cli.cli.app import app
from jiio_cli.data.sinusoid import SinusoidBatch, sample_sinusoid_tasks
from jiio_cli.engine import JIIOConfig, SolverConfig, StepSchedule, jiio_solve
from jiio_cli.models import FiLMRegressor, RegressorConfig, build_model
from jiio_cli.models.regressor import CONTRACTION
from jiio_cli.tasks.fewshot import sinusoid_training
from jiio_cli.tasks.fewshot.sinusoid import (
    DIVERGED_RESIDUAL,
    RegressionAdaptConfig,
    adapt_context,
    meta_loss,
    prediction_jacobian,
    predictions,
    query_states,
    support_objective,
    support_problem,
)
from jiio_cli.tasks.fewshot.sinusoid_training import (
    SinusoidTrainConfig,
    adapt_settings,
    load_sinusoid_model,
)
from jiio_cli.training import TrainConfig

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})

TINY = RegressorConfig(hidden=8, context_dim=3, injection_hidden=8)
TIGHT = SolverConfig(memory=8, max_iter=300, tol=1e-12)
SOLVE = SolverConfig(memory=5, max_iter=100, tol=1e-9)


def _tiny_model(seed: int, film_scale: float = 1.0) -> FiLMRegressor:
    torch.manual_seed(seed)
    model = FiLMRegressor(TINY).double()
    with torch.no_grad():
        model.cell.film.weight.mul_(film_scale)
    return model


def _tasks(seed: int, batch: int = 4, shots: int = 5, queries: int = 6) -> SinusoidBatch:
    tasks = sample_sinusoid_tasks(batch, shots, queries, torch.Generator().manual_seed(seed))
    return SinusoidBatch(*(getattr(tasks, f.name).double() for f in dataclasses.fields(tasks)))


def _settings(penalty: float = 1.0) -> RegressionAdaptConfig:
    return RegressionAdaptConfig(
        penalty=penalty,
        jiio=JIIOConfig(
            alpha_x=StepSchedule(0.3),
            solver=SolverConfig(memory=10, max_iter=200, tol=1e-9),
            refine=TIGHT,
        ),
        naive=adam_reference(300, SOLVE),
        forward=TIGHT,
        adjoint=TIGHT,
    )


# ------------------------------------------------------------------------------ the model


def test_cell_is_a_contraction_whatever_the_weights_and_context() -> None:
    torch.manual_seed(0)
    model = FiLMRegressor(TINY).double()
    with torch.no_grad():
        model.cell.recurrent.mul_(50)  # far beyond the bound before the spectral clamp
    t = torch.randn(2, 5, 1, dtype=torch.float64)
    v = 10 * torch.randn(2, 3, dtype=torch.float64)
    model.bind(t)
    cell = model.context_cell()
    model.unbind()
    for row in range(2):
        for point in range(5):
            z = torch.randn(2, 5, 8, dtype=torch.float64)

            def f_point(zp: Tensor, row: int = row, point: int = point, z: Tensor = z) -> Tensor:
                full = z.clone()
                full[row, point] = zp
                return cell(full, v)[row, point]

            jac = torch.autograd.functional.jacobian(f_point, z[row, point])
            assert torch.linalg.matrix_norm(jac, ord=2) <= CONTRACTION + 1e-9


def test_zero_context_is_the_unmodulated_model_and_the_head_offset_is_linear() -> None:
    model = _tiny_model(1)
    z = torch.randn(2, 4, 8, dtype=torch.float64)
    zero = torch.zeros(2, 3, dtype=torch.float64)
    torch.testing.assert_close(model.predict(z, zero), model.head(z))
    v = torch.randn(2, 3, dtype=torch.float64)
    assert model.head_offset is not None
    offset = model.head_offset(v)  # (2, H + 1): ΔW then Δb
    expected = model.head(z) + (z * offset[:, None, :8]).sum(-1, keepdim=True) + offset[:, None, 8:]
    torch.testing.assert_close(model.predict(z, v), expected)


def test_registry_rebuilds_the_regressor_from_its_config() -> None:
    model = build_model("regressor", TINY.to_dict())
    assert isinstance(model, FiLMRegressor) and model.config == TINY
    with pytest.raises(ValueError, match="unknown RegressorConfig key"):
        build_model("regressor", {"ways": 5})


# ------------------------------------------------------------------------------ adaptation


def test_jiio_reaches_the_support_objective_of_the_naive_method_run_to_convergence() -> None:
    # A FiLM map at 0.3x its initial scale and λ = 1 keep the support problem near-convex,
    # so there is one minimiser for both methods to find.
    model = _tiny_model(2, film_scale=0.3)
    tasks = _tasks(2, batch=3)
    settings = _settings()
    jiio = adapt_context(model, tasks.support_t, tasks.support_y, settings)
    naive = adapt_context(model, tasks.support_t, tasks.support_y, settings, method="naive")
    assert bool(jiio.converged.all()), jiio.residual_x
    torch.testing.assert_close(jiio.objective, naive.objective, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(jiio.x, naive.x, atol=1e-4, rtol=1e-4)
    # JIIO got there with a fraction of the naive method's function evaluations.
    assert float(jiio.f_evals.sum()) < 0.2 * float(naive.f_evals.sum())
    zero = torch.zeros_like(jiio.x)
    objective = support_objective(model, tasks.support_y, 1.0)
    start = objective(query_states(model, tasks.support_t, zero, TIGHT), zero)
    assert bool((jiio.objective < start - 1e-3).all())


def test_converged_jiio_context_is_stationary() -> None:
    # With the full FiLM map the problem is not convex: JIIO, a root finder for the KKT
    # conditions, may stop at another stationary point than Adam; stationary it must be.
    model = _tiny_model(3)
    tasks = _tasks(3)
    result = adapt_context(model, tasks.support_t, tasks.support_y, _settings(0.1))
    assert bool(result.converged.all())
    objective = support_objective(model, tasks.support_y, 0.1)
    for i in range(3):
        e = torch.zeros_like(result.x)
        e[:, i] = 1e-6
        up, down = result.x + e, result.x - e
        slope = objective(query_states(model, tasks.support_t, up, TIGHT), up)
        slope = (slope - objective(query_states(model, tasks.support_t, down, TIGHT), down)) / 2e-6
        assert float(slope.detach().abs().max()) < 1e-5, slope


def test_rows_whose_jiio_solve_diverged_are_solved_again_with_a_smaller_step() -> None:
    model = _tiny_model(2, film_scale=0.3)
    tasks = _tasks(2, batch=6)
    settings = _settings()
    # α_x = 200 is far too large for some rows (Anderson rescues the others).
    jiio = dataclasses.replace(
        settings.jiio,
        alpha_x=StepSchedule(200.0),
        solver=dataclasses.replace(settings.jiio.solver, max_iter=60),
    )
    settings = dataclasses.replace(settings, jiio=jiio)
    problem = support_problem(model, tasks.support_t, tasks.support_y, 1.0)
    plain = jiio_solve(problem, jiio)
    diverged = plain.residual_x > DIVERGED_RESIDUAL
    assert 0 < int(diverged.sum()) < 6, plain.residual_x
    safe = adapt_context(model, tasks.support_t, tasks.support_y, settings)
    assert bool((safe.residual_x <= 1e-3).all()), safe.residual_x
    kept = ~diverged
    torch.testing.assert_close(safe.x[kept], plain.x[kept])
    assert torch.equal(safe.f_evals[kept], plain.f_evals[kept])
    # The retried rows paid for both solves, and now improve on v = 0.
    assert bool((safe.f_evals[diverged] > plain.f_evals[diverged]).all())
    zero = torch.zeros_like(safe.x)
    objective = support_objective(model, tasks.support_y, 1.0)
    start = objective(query_states(model, tasks.support_t, zero, TIGHT), zero)
    assert bool((safe.objective < start).all())


# ------------------------------------------------------------------------------ meta-gradient


def _central(loss_at: Callable[[float], float], eps: float = 1e-6) -> float:
    return (loss_at(eps) - loss_at(-eps)) / (2 * eps)


def _query_mse(model: FiLMRegressor, t: Tensor, y: Tensor, v: Tensor) -> float:
    return float((predictions(model, t, v, TIGHT) - y).pow(2).mean())


def test_first_order_meta_gradient_matches_finite_differences() -> None:
    model = _tiny_model(4)
    tasks = _tasks(4)
    settings = _settings(0.1)
    out = meta_loss(
        model,
        tasks.support_t,
        tasks.support_y,
        tasks.query_t,
        tasks.query_y,
        settings,
        hypergradient=False,
    )
    assert out.loss.item() == pytest.approx(out.query_mse, rel=1e-9)
    out.loss.backward()
    g = torch.Generator().manual_seed(4)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]
    analytic = directional_derivative(model, direction)
    v_star = out.inner.x
    numeric = _central(
        lambda eps: _query_mse(
            perturbed(model, direction, eps), tasks.query_t, tasks.query_y, v_star
        )
    )
    assert abs(analytic - numeric) <= 1e-7 + 1e-5 * abs(numeric), (analytic, numeric)


def _gauss_newton_solve(
    model: FiLMRegressor, t: Tensor, y: Tensor, v0: Tensor, penalty: float
) -> Tensor:
    """argmin_v of the support objective by Gauss–Newton steps: a reference that converges
    quadratically on a zero-residual problem."""
    v = v0.clone()
    n = t.shape[1]
    eye = torch.eye(v.shape[1], dtype=v.dtype)
    for _ in range(25):
        z = query_states(model, t, v, TIGHT)
        a, _ = prediction_jacobian(model, t, z, v, TIGHT)
        jac = a.flatten(1, 2)
        residual = (model.predict(z, v) - y).detach().flatten(1)
        grad = (2 / n) * (jac.transpose(1, 2) @ residual[..., None]).squeeze(-1) + penalty * v
        step = torch.linalg.solve((2 / n) * jac.transpose(1, 2) @ jac + penalty * eye, grad)
        v = (v - step).detach()
        if float(step.abs().max()) < 1e-14:
            break
    return v


def test_hypergradient_is_the_exact_bilevel_gradient_where_the_support_is_fitted() -> None:
    """With λ = 0 and targets the model itself produces at some context, the support fit
    is exact, the Gauss–Newton terms are the whole Hessian and mixed derivative, and the
    meta-gradient must equal d/dθ L_q(θ, v*(θ)) with v* re-solved at every θ."""
    model = _tiny_model(5)
    g = torch.Generator().manual_seed(5)
    t = 4 * torch.rand(2, 8, 1, generator=g, dtype=torch.float64) - 2
    query_t = 4 * torch.rand(2, 5, 1, generator=g, dtype=torch.float64) - 2
    query_y = torch.randn(2, 5, 1, generator=g, dtype=torch.float64)
    v_true = torch.randn(2, 3, generator=g, dtype=torch.float64)
    y = predictions(model, t, v_true, TIGHT)
    settings = _settings(0.0)
    v_star = _gauss_newton_solve(model, t, y, v_true + 0.05, 0.0)
    torch.testing.assert_close(v_star, v_true, atol=1e-10, rtol=0)
    # Any result object will do to carry v* and its support fixed point into meta_loss.
    carrier = dataclasses.replace(settings.naive, steps=1)
    inner = adapt_context(model, t, y, dataclasses.replace(settings, naive=carrier), "naive")
    inner = dataclasses.replace(inner, x=v_star, z=query_states(model, t, v_star, TIGHT))
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]

    def bilevel(eps: float) -> float:
        m = perturbed(model, direction, eps)
        return _query_mse(m, query_t, query_y, _gauss_newton_solve(m, t, y, v_star, 0.0))

    numeric = _central(bilevel, 1e-5)
    out = meta_loss(model, t, y, query_t, query_y, settings, hypergradient=True, inner=inner)
    out.loss.backward()
    analytic = directional_derivative(model, direction)
    assert abs(analytic - numeric) <= 1e-7 + 1e-5 * abs(numeric), (analytic, numeric)
    # The path through v* matters: the first-order gradient is another number.
    model.zero_grad()
    meta_loss(
        model, t, y, query_t, query_y, settings, hypergradient=False, inner=inner
    ).loss.backward()
    assert abs(directional_derivative(model, direction) - numeric) > 1e-3 * abs(numeric)


# ------------------------------------------------------------------------------ training


def _spec(seed: int, epochs: int = 2) -> SinusoidTrainConfig:
    return SinusoidTrainConfig(
        model=RegressorConfig(hidden=32, context_dim=8, injection_hidden=32),
        loop=TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, seed=seed),
        shots=(5,),
        queries=5,
        episodes_per_epoch=40,
        inner_iters=15,
        eval_episodes=20,
    )


def test_meta_training_lowers_the_query_mse_after_adaptation() -> None:
    spec = _spec(0)
    torch.manual_seed(0)
    model = FiLMRegressor(spec.model)
    settings = adapt_settings(spec)
    held_out = sample_sinusoid_tasks(50, 5, 20, torch.Generator().manual_seed(123))

    def query_mse() -> float:
        v = adapt_context(model, held_out.support_t, held_out.support_y, settings).x
        return _query_mse(model, held_out.query_t, held_out.query_y, v)

    before = query_mse()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        tasks = sample_sinusoid_tasks(16, 5, 5, g)
        optimizer.zero_grad()
        out = meta_loss(
            model, tasks.support_t, tasks.support_y, tasks.query_t, tasks.query_y, settings
        )
        out.loss.backward()
        optimizer.step()
    after = query_mse()
    assert after < 0.5 * before, (before, after)


def _train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "meta", "--dataset", "sinusoid", "--shots", "3,5",
            "--queries", "5", "--epochs", "2", "--episodes-per-epoch", "24",
            "--tasks-per-step", "8", "--width", "12", "--context-dim", "4",
            "--inner-iters", "8", "--out", str(out), "--device", "cpu", *extra]  # fmt: skip


def _params(path: Path) -> dict[str, Tensor]:
    return {k: v for k, v in load_checkpoint(path).tensors.items() if k.startswith("model.")}


def test_cli_resume_after_an_interruption_equals_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = runner.invoke(app, [*_train_args(tmp_path / "full"), "--json"])
    assert full.exit_code == 0, full.output
    doc = json.loads(full.stdout)
    assert doc["steps"] == 6 and doc["epochs"] == 2 and doc["shots"] == [3, 5]
    assert doc["hypergradient"] is True
    assert doc["val_mse"] == pytest.approx((doc["val_mse_3shot"] + doc["val_mse_5shot"]) / 2)
    assert doc["best_val_mse"] <= doc["val_mse"] + 1e-12

    calls = {"n": 0}
    real = sinusoid_training.meta_loss

    def interrupted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:  # Ctrl-C during step 5, in the second epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sinusoid_training, "meta_loss", interrupted)
    cut = runner.invoke(app, _train_args(tmp_path / "cut"))
    assert cut.exit_code == 130 and "interrupted" in cut.stderr
    monkeypatch.setattr(sinusoid_training, "meta_loss", real)
    resumed = runner.invoke(app, [*_train_args(tmp_path / "cut", "--resume"), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["steps"] == 6
    for name in ("meta-last", "meta-best"):
        a = _params(tmp_path / "full" / f"{name}.safetensors")
        b = _params(tmp_path / "cut" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # The checkpoint rebuilds the model and its adaptation settings.
    model, _, spec = load_sinusoid_model(
        tmp_path / "full" / "meta-best.safetensors", torch.device("cpu")
    )
    assert model.config == RegressorConfig(hidden=12, context_dim=4)
    assert spec.shots == (3, 5) and spec.inner_iters == 8 and spec.alpha_x == 0.3
    history = json.loads(
        load_checkpoint(tmp_path / "full" / "meta-last.safetensors").extra["history"]
    )
    assert [h["shots"] for h in history if "shots" in h] == [3.0, 5.0] * 3


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained regressor saved like ``jiio train`` saves one (adaptation works on any)."""
    path = tmp_path_factory.mktemp("sinusoid") / "meta.safetensors"
    spec = _spec(0)
    torch.manual_seed(0)
    model = FiLMRegressor(spec.model)
    save_checkpoint(
        path,
        {f"model.{k}": v for k, v in model.state_dict().items()},
        task="meta",
        model_kind="regressor",
        model_config=spec.model.to_dict(),
        step=0,
        metrics={},
        training_config=spec.to_json(),
    )
    return path


def test_adapt_table_prints_the_paired_differences(tiny_checkpoint: Path) -> None:
    args = ["adapt", "--dataset", "sinusoid", "-c", str(tiny_checkpoint), "--episodes",
            "2", "--shots", "5", "--queries", "5", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "no adaptation (v = 0)" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("JIIO minus"))
    assert "no adaptation: " in line and "naive: " in line


def test_adapt_json_reports_the_three_methods(tiny_checkpoint: Path) -> None:
    args = ["adapt", "--dataset", "sinusoid", "-c", str(tiny_checkpoint), "--episodes",
            "6", "--shots", "5", "--queries", "10", "--batch-size", "3", "--device", "cpu",
            "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"] == "sinusoid" and doc["episodes"] == 6 and doc["shots"] == 5
    assert doc["queries"] == 10 and doc["jiio_iterations"] == 15  # the training budget
    for method in ("jiio", "naive", "no_adaptation"):
        r = doc[method]
        assert r["mse"] > 0 and r["ci95"] >= 0 and r["seconds_per_task"] > 0
    for method in ("jiio", "naive"):
        assert {"support_objective", "f_evals_per_task", "vjps_per_task"} <= doc[method].keys()
    assert all(s >= 1 for s in doc["naive_steps"])
    for other in ("no_adaptation", "naive"):
        paired = doc["paired"][f"jiio_minus_{other}"]
        assert paired["mean"] == pytest.approx(doc["jiio"]["mse"] - doc[other]["mse"], abs=1e-6)
        assert paired["ci95"] >= 0
    # Equal budgets: the naive loop's f-evaluations are within one Adam step of JIIO's.
    assert (
        abs(doc["naive"]["f_evals_per_task"] - doc["jiio"]["f_evals_per_task"])
        < 0.5 * (doc["jiio"]["f_evals_per_task"])
    )
    # The no-adaptation row is the model at v = 0 on the same tasks, recomputed here.
    model, _, _ = load_sinusoid_model(tiny_checkpoint, torch.device("cpu"))
    from jiio_cli.tasks.fewshot.sinusoid_eval import evaluation_tasks

    g = evaluation_tasks(0, 5)
    mses = []
    for _ in range(2):
        tasks = sample_sinusoid_tasks(3, 5, 10, g)
        zero = torch.zeros(3, model.context_size)
        y = predictions(model, tasks.query_t, zero, SolverConfig(memory=5, max_iter=40, tol=1e-4))
        mses += (y - tasks.query_y).pow(2).mean((1, 2)).tolist()
    assert doc["no_adaptation"]["mse"] == pytest.approx(sum(mses) / 6, rel=1e-5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["adapt", "--dataset", "sines", "--episodes", "4"], "--dataset"),
        (["train", "--task", "meta", "--dataset", "sinusoid", "--shots", "0"], "--shots"),
        (["train", "--task", "meta", "--dataset", "sinusoid", "--shots", "5,x"], "--shots"),
        (["train", "--task", "meta", "--shots", "1,5"], "one number of shots"),
        (["train", "--task", "meta", "--dataset", "sinusoid", "--image-size", "8"], "--image-size"),
        (["train", "--task", "meta", "--dataset", "sinusoid", "--hyper-step", "3"], "--hyper-step"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    extra = ["-c", str(tiny_checkpoint)] if argv[0] == "adapt" else ["--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*argv, *extra, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "r").exists()  # nothing trained


@pytest.mark.parametrize(("clip", "expected"), [(1.0, 0.1), (0.0, 0.1 * 2e4)])
def test_training_loop_clips_the_gradient_norm(
    clip: float, expected: float, tmp_path: Path
) -> None:
    """One step on a loss with gradient norm 2·10⁴: Adam's first moment is 0.1·g, so its
    norm shows the gradient the optimiser received."""
    from jiio_cli.training import StepOutcome, TrainRun, run_training

    model = torch.nn.Linear(3, 1)

    def step_fn(_indices: Tensor, _step: int, _g: torch.Generator) -> StepOutcome:
        return StepOutcome(1e4 * (model.weight.sum() + model.bias.sum()))

    run_training(
        model=model,
        train_size=1,
        step_fn=step_fn,
        eval_fn=dict,
        config=TrainConfig(epochs=1, batch_size=1, max_grad_norm=clip),
        run=TrainRun(tmp_path / "run"),
        name="toy",
        meta={"task": "meta", "model_kind": "toy", "model_config": {}, "training_config": {}},
        best_key="none",
    )
    tensors = load_checkpoint(tmp_path / "run" / "toy-last.safetensors").tensors
    moments = torch.cat([tensors["optim.0.exp_avg"].flatten(), tensors["optim.1.exp_avg"]])
    assert float(moments.norm()) == pytest.approx(expected, rel=1e-4)
    # The history keeps the norm before clipping (four entries of 10⁴), only when clipping.
    extra = load_checkpoint(tmp_path / "run" / "toy-last.safetensors").extra
    (record,) = [h for h in json.loads(extra["history"]) if "loss" in h]
    if clip > 0:
        assert record["grad_norm"] == pytest.approx(2e4, rel=1e-6)
    else:
        assert "grad_norm" not in record
