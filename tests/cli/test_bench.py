"""``jiio bench``: it runs, its numbers are internally consistent, the JSON has its schema."""

from __future__ import annotations

import pytest
import torch
from cli_runs import invoke_json
from typer.testing import CliRunner

from jiio_cli.bench.timing import timed_median
from jiio_cli.cli.app import app

runner = CliRunner(env={"NO_COLOR": "1"})


@pytest.mark.slow
def test_reconstruct_bench_json_is_consistent() -> None:
    doc = invoke_json(
        [
            "bench",
            "--task",
            "reconstruct",
            "--batch-size",
            "2",
            "--naive-steps",
            "3",
            "--x-weight",
            "4",
            "--device",
            "cpu",
            "--json",
        ]
    )
    speed = doc["speed"]
    naive, jiio = speed["naive"], speed["jiio"]
    assert doc["task"] == "reconstruct" and speed["batch_size"] == 2
    assert doc["jiio_x_weight"] == 4 and doc["jiio_memory"] == 10
    assert doc["solve_iters"] == 100 and naive["inner_max_iter"] == 100
    assert 0.0 <= naive["inner_solves_converged"] <= 1.0
    assert len(naive["trace"]) == 3 + 1
    times = [p["seconds"] for p in naive["trace"]]
    assert times == sorted(times) and abs(times[-1] - naive["seconds"]) < 1e-9
    assert naive["trace"][-1]["objective"] == speed["target_objective"]
    assert naive["seconds_to_target"] <= naive["seconds"]
    runs = jiio["runs"]
    budgets = [r["iterations"] for r in runs]
    assert budgets == sorted(budgets) and len(set(budgets)) == len(budgets)
    # The ratio comes from the smallest budget that reached the target.
    hits = [r for r in runs if r["objective"] <= speed["target_objective"]]
    if speed["ratio"] is None:
        assert not hits and jiio["seconds_to_target"] is None
    else:
        first = hits[0]
        assert jiio["seconds_to_target"] == first["seconds"]
        assert abs(speed["ratio"] - naive["seconds_to_target"] / first["seconds"]) < 1e-9
    assert all(r["f_evals"] >= r["iterations"] for r in runs)


def test_reconstruct_bench_says_when_the_naive_solves_are_truncated() -> None:
    args = ["bench", "--task", "reconstruct", "--batch-size", "2", "--naive-steps", "2"]
    args += ["--device", "cpu", "--solve-iters", "3"]
    doc = invoke_json([*args, "--json"])
    # Three iterations from zeros do not reach 1e-4 on the shipped decoder.
    assert doc["solve_iters"] == 3 and doc["speed"]["naive"]["inner_solves_converged"] < 0.5
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "truncated at the cap" in table.stdout
    refused = runner.invoke(app, ["bench", "--task", "attack", "--solve-iters", "3"])
    assert refused.exit_code == 2 and "--solve-iters does not apply to --task attack" in (
        refused.output
    )


def test_reconstruct_bench_solves_the_problem_the_checkpoint_was_trained_for(tmp_path) -> None:
    from jiio_cli.checkpoint import load_checkpoint, save_checkpoint_like
    from jiio_cli.tasks.loading import default_checkpoint

    source = load_checkpoint(default_checkpoint("decoder"))
    assert (source.training_config or {}).get("latent_weight") == 1e-3
    args = ["bench", "--task", "reconstruct", "--batch-size", "2", "--naive-steps", "2"]
    args += ["--device", "cpu", "--json"]
    targets = {}
    for weight in (1e-3, 0.5):
        path = save_checkpoint_like(
            tmp_path / f"decoder-{weight}.safetensors",
            source,
            metrics={},
            training_config={**(source.training_config or {}), "latent_weight": weight},
        )
        doc = invoke_json([*args, "--checkpoint", str(path)])
        assert doc["latent_weight"] == weight
        targets[weight] = doc["speed"]["target_objective"]
    # The same start and steps under a 500× stronger latent penalty: another objective.
    assert targets[0.5] != targets[1e-3]


def test_quality_table_rows_are_consistent() -> None:
    from jiio_cli.bench.reconstruct import ReconstructBenchConfig, quality_table
    from jiio_cli.data import load_mnist5k
    from jiio_cli.tasks.loading import default_checkpoint, load_model

    decoder, _ = load_model(
        default_checkpoint("decoder"), {"inpaint"}, "decoder", torch.device("cpu")
    )
    clean = load_mnist5k("heldout")[0][:6]
    cfg = ReconstructBenchConfig(batch_size=4)
    tables = {
        (kind, tau): quality_table(decoder, clean, kind, cfg, 20, 0.15, seed=0, range_error=tau)
        for kind in ("inpaint", "denoise")
        for tau in (0.0, 0.01)
    }
    for table in tables.values():
        assert len(table) == 4 and "no learning (corrupted input)" in table
        assert all(torch.isfinite(torch.tensor(v)) for v in table.values())
    jiio, alone = "jiio (DEQ decoder)", "jiio, decoder output only"
    # Keeping the exactly known pixels can only lower the error of the hole's image.
    for tau in (0.0, 0.01):
        assert tables["inpaint", tau][jiio] > tables["inpaint", tau][alone]
    assert tables["inpaint", 0.0] == tables["inpaint", 0.01]
    # τ² = 0 trusts the decoder; τ² > 0 mixes the noisy pixels in and changes the image.
    assert tables["denoise", 0.0][jiio] == tables["denoise", 0.0][alone]
    assert tables["denoise", 0.01][jiio] != tables["denoise", 0.01][alone]
    assert tables["denoise", 0.01][alone] == tables["denoise", 0.0][alone]


def test_engine_bench_reports_overhead_ratios() -> None:
    rows = invoke_json(
        ["bench", "--task", "engine", "--batch-size", "2", "--device", "cpu", "--json"]
    )["rows"]
    assert [r["memory"] for r in rows] == [5, 20]
    for r in rows:
        # Times are whatever the machine gave (no timing assertions); only their arithmetic.
        assert r["f_vjp_seconds"] > 0 and r["f_seconds"] > 0
        # History memory per sample from the counts: 2·m stacked states + an m×m Gram.
        n = 2 * 32 * 16 * 16 + 3 * 16 * 16
        expected = (2 * r["memory"] * n * 4 + r["memory"] ** 2 * 8) / 2**20
        assert abs(r["jiio_history_mib_per_sample"] - expected) < 1e-9
        assert abs(r["overhead_ratio"] - r["jiio_iteration_seconds"] / r["f_vjp_seconds"]) < 1e-9


def test_engine_bench_options_reach_the_measurement() -> None:
    doc = invoke_json(
        [
            "bench",
            "--task",
            "engine",
            "--batch-size",
            "3",
            "--channels",
            "8",
            "--size",
            "8",
            "--precision",
            "bf16",
            "--compile",
            "--device",
            "cpu",
            "--json",
        ]
    )
    # On the CPU --compile measures eager only: one row per memory, no graph rows.
    assert [(r["memory"], r["mode"]) for r in doc["rows"]] == [(5, "eager"), (20, "eager")]
    for r in doc["rows"]:
        assert (r["batch"], r["channels"], r["size"], r["precision"]) == (3, 8, 8, "bf16")
        per_sample = r["jiio_iteration_seconds"] / 3
        assert abs(r["iteration_seconds_per_sample"] - per_sample) < 1e-12
        n = 2 * 8 * 8 * 8 + 3 * 8 * 8
        expected = (2 * r["memory"] * n * 4 + r["memory"] ** 2 * 8) / 2**20
        assert abs(r["jiio_history_mib_per_sample"] - expected) < 1e-9


@pytest.mark.slow
def test_engine_bench_history_precisions_are_measured_and_counted() -> None:
    rows = invoke_json(
        [
            *("bench", "--task", "engine", "--sizes", "2x8x8", "--history", "fp32,bf16"),
            *("--device", "cpu", "--json"),
        ]
    )["rows"]
    assert [(r["memory"], r["history"]) for r in rows] == [
        (5, "fp32"),
        (5, "bf16"),
        (20, "fp32"),
        (20, "bf16"),
    ]
    n = 2 * 8 * 8 * 8 + 3 * 8 * 8
    for r in rows:
        m = r["memory"]
        # bf16: two (m, n) buffers at 2 bytes and the newest pair (2 n) in float32.
        stored = 2 * m * n * 2 + 2 * n * 4 if r["history"] == "bf16" else 2 * m * n * 4
        assert abs(r["jiio_history_mib_per_sample"] - (stored + m * m * 8) / 2**20) < 1e-9
    bad = runner.invoke(app, ["bench", "--task", "engine", "--history", "fp16", "--device", "cpu"])
    assert bad.exit_code == 2 and "invalid --history" in bad.stderr


@pytest.mark.slow
def test_engine_bench_measures_every_listed_size() -> None:
    rows = invoke_json(
        ["bench", "--task", "engine", "--sizes", "2x8x8,3x16x6", "--device", "cpu", "--json"]
    )["rows"]
    shapes = [(r["batch"], r["channels"], r["size"], r["memory"]) for r in rows]
    assert shapes == [(2, 8, 8, 5), (2, 8, 8, 20), (3, 16, 6, 5), (3, 16, 6, 20)]


def test_bench_rejects_a_bad_repeat_count() -> None:
    result = runner.invoke(app, ["bench", "--task", "engine", "--repeat", "0", "--device", "cpu"])
    assert result.exit_code == 2
    assert "repeat" in result.output and "Traceback" not in result.output


def test_timed_median_returns_the_last_result_and_the_median() -> None:
    calls: list[int] = []

    def work() -> int:
        calls.append(len(calls))
        return len(calls)

    result, seconds = timed_median(work, torch.device("cpu"), repeat=3)
    assert result == 3 and len(calls) == 3 and seconds >= 0
    with pytest.raises(ValueError):
        timed_median(work, torch.device("cpu"), repeat=0)


def test_speed_observations_are_the_benchs_fixed_draw() -> None:
    from jiio_cli.bench.reconstruct import speed_observations
    from jiio_cli.data import load_mnist5k

    clean = load_mnist5k("heldout")[0][:5]
    observed, known = speed_observations(clean)
    again, known_again = speed_observations(clean)
    assert torch.equal(observed, again) and torch.equal(known, known_again)
    # A 10×10 hole per image, nothing else hidden, the known pixels untouched.
    assert ((1 - known).flatten(1).sum(dim=1) == 100).all()
    assert torch.equal(observed * known, clean * known)
    assert not torch.equal(speed_observations(clean, seed=1)[1], known)
    noisy, all_known = speed_observations(clean, "denoise")
    assert bool(all_known.all()) and not torch.equal(noisy, clean)


@pytest.mark.parametrize(
    ("task", "option", "message"),
    [
        (
            "adapt",
            ["--eps", "0.3"],
            "--eps does not apply to --task adapt (it is for --task attack)",
        ),
        ("engine", ["--quality"], "(it is for --task reconstruct); remove it"),
        ("train", ["-c", "x.safetensors"], "(it is for --task reconstruct, attack, adapt)"),
        ("reconstruct", ["--ways", "3"], "--ways does not apply to --task reconstruct"),
        ("attack", ["--naive-steps", "5"], "--naive-steps does not apply to --task attack"),
        ("train", ["--compile"], "(it is for --task reconstruct, engine, attack, adapt)"),
    ],
)
def test_bench_refuses_options_its_task_does_not_read(
    task: str, option: list[str], message: str
) -> None:
    result = runner.invoke(app, ["bench", "--task", task, *option, "--device", "cpu"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_every_bench_option_belongs_to_some_task() -> None:
    """An option's help panel is its scope: each task panel names real tasks, and every
    option outside them is read by every task."""
    import typer.main

    from jiio_cli.cli.commands.bench import PANEL_TASKS, BenchTask

    command = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    panels = {p.name: getattr(p, "rich_help_panel", None) for p in command.params}
    tasks = {t.value for t in BenchTask}
    assert {t for owners in PANEL_TASKS.values() for t in owners} == tasks
    everywhere = {name for name, panel in panels.items() if panel not in PANEL_TASKS}
    assert everywhere == {"task", "config", "batch_size", "device", "seed", "json_output", "debug"}
