"""``jiio bench``: it runs, its numbers are internally consistent, the JSON has its schema."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from jiio_cli.cli.app import app

runner = CliRunner(env={"NO_COLOR": "1"})


def test_reconstruct_bench_json_is_consistent() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "--task",
            "reconstruct",
            "--batch-size",
            "2",
            "--naive-steps",
            "3",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    speed = doc["speed"]
    naive, jiio = speed["naive"], speed["jiio"]
    assert doc["task"] == "reconstruct" and speed["batch_size"] == 2
    assert len(naive["trace"]) == 3 + 1
    times = [p["seconds"] for p in naive["trace"]]
    assert times == sorted(times) and abs(times[-1] - naive["seconds"]) < 1e-9
    assert naive["trace"][-1]["objective"] == speed["target_objective"]
    assert naive["seconds_to_target"] <= naive["seconds"]
    runs = jiio["runs"]
    assert [r["iterations"] for r in runs] == sorted(r["iterations"] for r in runs)
    # Every JIIO run but the last missed the target; the ratio follows from the times.
    assert all(r["objective"] > speed["target_objective"] for r in runs[:-1])
    if speed["ratio"] is not None:
        assert runs[-1]["objective"] <= speed["target_objective"]
        assert jiio["seconds_to_target"] == runs[-1]["seconds"]
        assert abs(speed["ratio"] - naive["seconds_to_target"] / runs[-1]["seconds"]) < 1e-9
    assert all(r["f_evals"] >= r["iterations"] for r in runs)


def test_engine_bench_reports_overhead_ratios() -> None:
    result = runner.invoke(
        app, ["bench", "--task", "engine", "--batch-size", "2", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["memory"] for r in rows] == [5, 20]
    for r in rows:
        # Times are whatever the machine gave (no timing assertions); only their arithmetic.
        assert r["f_vjp_seconds"] > 0 and r["f_seconds"] > 0
        # History memory per sample from the counts: 2·m stacked states + an m×m Gram.
        n = 2 * 32 * 16 * 16 + 3 * 16 * 16
        expected = (2 * r["memory"] * n * 4 + r["memory"] ** 2 * 8) / 2**20
        assert abs(r["jiio_history_mib_per_sample"] - expected) < 1e-9
        assert abs(r["overhead_ratio"] - r["jiio_iteration_seconds"] / r["f_vjp_seconds"]) < 1e-9
