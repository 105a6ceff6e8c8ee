"""``jiio bench --task adapt``: one document with both methods on the same episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from meta_models import save_tiny_meta_model
from typer.testing import CliRunner

from jiio_cli.cli.app import app

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "meta.safetensors"
    save_tiny_meta_model(path)
    return path


@pytest.mark.slow
def test_adapt_bench_reports_both_methods_consistently(model: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "--task",
            "adapt",
            "-c",
            str(model),
            "--batch-size",
            "3",
            "--naive-steps",
            "4",
            "--ways",
            "3",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    speed = doc["speed"]
    assert doc["task"] == "adapt" and speed["tasks"] == 3 and speed["ways"] == 3
    naive = speed["naive"]
    assert 0.0 <= naive["inner_solves_converged"] <= 1.0
    # Five solved points (the start and 4 steps), the target is the last one.
    assert len(naive["trace"]) == 5
    assert naive["trace"][-1]["objective"] == pytest.approx(speed["target_support_objective"])
    assert naive["seconds_to_target"] <= naive["seconds"] + 1e-9
    runs = speed["jiio"]["runs"]
    budgets = [r["iterations"] for r in runs]
    assert runs and budgets == sorted(budgets) and len(set(budgets)) == len(budgets)
    # The ratio comes from the smallest budget that reached the target.
    hits = [r for r in runs if r["support_objective"] <= speed["target_support_objective"]]
    if speed["ratio"] is None:
        assert not hits
    else:
        first = hits[0]
        assert speed["ratio"] == pytest.approx(naive["seconds_to_target"] / first["seconds"])
    for r in [naive, *runs]:
        assert 0 <= r["query_accuracy"] <= 1 and r["f_evals_per_task"] >= r["iterations_per_task"]


def test_adapt_bench_refuses_more_ways_than_the_model_serves(model: Path) -> None:
    result = runner.invoke(
        app, ["bench", "--task", "adapt", "-c", str(model), "--ways", "9", "--device", "cpu"]
    )
    assert result.exit_code == 2 and "at most 5" in result.stderr


def _runs(model: Path, *extra: str) -> tuple[dict, dict[int, float]]:
    args = ["bench", "--task", "adapt", "-c", str(model), "--batch-size", "2"]
    args += ["--naive-steps", "1", "--ways", "3", "--device", "cpu", "--json", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    return doc, {r["iterations"]: r["support_objective"] for r in doc["speed"]["jiio"]["runs"]}


@pytest.mark.slow
def test_adapt_bench_uses_the_given_step_size_and_memory(model: Path) -> None:
    doc, small = _runs(model, "--alpha-x", "0.1", "--memory", "3")
    assert doc["jiio_alpha_x"] == 0.1 and doc["jiio_memory"] == 3
    _, large = _runs(model, "--alpha-x", "8", "--memory", "3")
    # The same budget from the same start: a different step size gives another objective.
    shared = sorted(set(small) & set(large))
    assert shared
    for budget in shared:
        assert small[budget] != pytest.approx(large[budget], rel=1e-6)


@pytest.mark.parametrize(
    ("option", "key", "values"),
    [("--x-weight", "jiio_x_weight", (1.0, 50.0)), ("--film-scale", "jiio_film_scale", (1.0, 0.3))],
)
def test_adapt_bench_uses_the_given_anderson_setting(
    model: Path, option: str, key: str, values: tuple[float, float]
) -> None:
    first_doc, first = _runs(model, option, str(values[0]), "--memory", "3")
    second_doc, second = _runs(model, option, str(values[1]), "--memory", "3")
    assert (first_doc[key], second_doc[key]) == values
    shared = sorted(set(first) & set(second))
    assert shared
    # Anderson mixes differently from the same start, so the objectives differ.
    assert any(first[b] != pytest.approx(second[b], rel=1e-6) for b in shared)


def test_context_scale_covers_the_film_code_only() -> None:
    from meta_models import TINY_META

    from jiio_cli.models import FiLMClassifier
    from jiio_cli.tasks.fewshot.classification import context_scale

    model = FiLMClassifier(TINY_META)
    assert context_scale(model, 1.0) is None
    factors = context_scale(model, 0.5)
    assert factors is not None and len(factors) == model.context_size
    film = model.config.context_dim
    assert set(factors[:film]) == {0.5} and set(factors[film:]) <= {1.0}


@pytest.mark.parametrize("option", ["--memory", "--x-weight", "--film-scale"])
def test_solver_options_of_other_tasks_are_refused(option: str) -> None:
    result = runner.invoke(app, ["bench", "--task", "attack", option, "5", "--device", "cpu"])
    assert result.exit_code == 2 and f"{option} does not apply to --task attack" in result.stderr


def test_x_weight_must_be_positive_on_the_command_line() -> None:
    result = runner.invoke(app, ["bench", "--task", "adapt", "--x-weight", "0", "--device", "cpu"])
    assert result.exit_code == 2 and "x_weight" in result.stderr.replace("-", "_")


def test_adapt_bench_table_names_the_jiio_settings(model: Path) -> None:
    args = ["bench", "--task", "adapt", "-c", str(model), "--batch-size", "2"]
    args += ["--naive-steps", "2", "--ways", "3", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--film-scale", "0.7"])
    assert result.exit_code == 0, result.output
    assert "film scale 0.7" in result.stdout and "x weight 30" in result.stdout
    assert "time-to-equal-objective ratio" in result.stdout


@pytest.mark.slow
def test_adapt_bench_caps_the_naive_solves_and_says_how_many_reached_tolerance(
    model: Path,
) -> None:
    default, _ = _runs(model)
    naive = default["speed"]["naive"]
    assert naive["inner_max_iter"] == 30 and naive["inner_tol"] == 1e-4
    assert "within 30 iterations" in naive["method"]
    # One iteration from zeros leaves solves above 1e-4; a generous cap reaches it on more.
    capped, _ = _runs(model, "--solve-iters", "1")
    generous, _ = _runs(model, "--solve-iters", "200")
    share = {
        cap: doc["speed"]["naive"]["inner_solves_converged"]
        for cap, doc in ((1, capped), (200, generous))
    }
    assert capped["speed"]["naive"]["inner_max_iter"] == 1
    assert share[1] < 1.0 and share[200] > share[1]
    args = ["bench", "--task", "adapt", "-c", str(model), "--batch-size", "2"]
    args += ["--naive-steps", "1", "--ways", "3", "--device", "cpu", "--solve-iters", "1"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert f"{100 * share[1]:.1f} % of its forward and adjoint solves" in table.stdout
    assert "truncated at the cap" in table.stdout


def test_adapt_bench_draws_its_plot(model: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "adapt.png"
    _runs(model, "--plot", str(out))
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100
    refused = runner.invoke(app, ["bench", "--task", "engine", "--plot", str(tmp_path / "e.png")])
    assert (
        refused.exit_code == 2
        and "--plot does not apply to --task engine (it is for --task reconstruct, attack, adapt)"
        in (refused.stderr)
    )
    assert not (tmp_path / "e.png").exists()
