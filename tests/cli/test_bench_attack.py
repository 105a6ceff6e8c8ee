"""``jiio bench --task attack``: runs, and its numbers are internally consistent."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from classifiers import save_classifier
from PIL import Image
from typer.testing import CliRunner

from jiio_cli.bench import attack as bench_attack
from jiio_cli.cli.app import app

runner = CliRunner(env={"NO_COLOR": "1"})


def test_attack_bench_json_is_consistent(tmp_path: Path) -> None:
    clf = save_classifier(tmp_path / "clf.safetensors")
    result = runner.invoke(
        app,
        [
            *("bench", "--task", "attack", "-c", str(clf), "--batch-size", "4"),
            *("--eps", "0.3", "--norm", "linf", "--device", "cpu", "--json"),
            *("--plot", str(tmp_path / "plot.png"), "--candidates", "2"),
        ],
    )
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "plot.png") as picture:
        assert picture.size == (720, 480)
    doc = json.loads(result.stdout)
    assert doc["jiio_candidates"] == 2
    speed = doc["speed"]
    assert speed["images"] == 4
    for method in ("jiio", "pgd"):
        rows = speed[method]
        assert [r["budget"] for r in rows] == sorted(r["budget"] for r in rows)
        for r in rows:
            assert 0 <= r["robust_accuracy"] <= 1 and r["seconds"] > 0
            assert r["f_evals"] >= r["iterations"]
    assert speed["target_robust_accuracy"] == speed["pgd"][-1]["robust_accuracy"]

    def reach(method: str) -> float | None:
        hits = [
            r["seconds"]
            for r in speed[method]
            if r["robust_accuracy"] <= speed["target_robust_accuracy"]
        ]
        return min(hits) if hits else None

    assert speed["pgd_seconds_to_target"] == reach("pgd")
    assert speed["jiio_seconds_to_target"] == reach("jiio")
    if speed["ratio"] is not None:
        expected = speed["pgd_seconds_to_target"] / speed["jiio_seconds_to_target"]
        assert speed["ratio"] == pytest.approx(expected)
    assert speed["target_mean_loss"] == speed["pgd"][-1]["mean_loss"]
    loss_hits = [r["seconds"] for r in speed["jiio"] if r["mean_loss"] >= speed["target_mean_loss"]]
    assert speed["jiio_seconds_to_target_loss"] == (min(loss_hits) if loss_hits else None)


def test_plot_refuses_empty_or_non_finite_series(tmp_path: Path) -> None:
    from jiio_cli.plot import write_line_plot

    with pytest.raises(ValueError, match="nothing"):
        write_line_plot(tmp_path / "a.png", {"x": []}, xlabel="s", ylabel="y", title="t")
    with pytest.raises(ValueError, match="finite"):
        write_line_plot(
            tmp_path / "b.png", {"x": [(0.0, float("nan"))]}, xlabel="s", ylabel="y", title="t"
        )
    assert not list(tmp_path.iterdir())


def test_attack_bench_against_apgd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Short budgets keep it fast; the command's own defaults are exercised by the PGD test.
    short = functools.partial(
        bench_attack.AttackBenchConfig, jiio_budgets=(2, 4), apgd_budgets=(2, 3)
    )
    monkeypatch.setattr(bench_attack, "AttackBenchConfig", short)
    clf = save_classifier(tmp_path / "clf.safetensors")
    result = runner.invoke(
        app,
        [
            *("bench", "--task", "attack", "-c", str(clf), "--batch-size", "3"),
            *("--eps", "0.5", "--norm", "l2", "--baseline", "apgd", "--device", "cpu"),
            *("--candidates", "1", "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    speed = json.loads(result.stdout)["speed"]
    assert speed["baseline"] == "apgd" and "pgd" not in speed
    assert [r["budget"] for r in speed["apgd"]] == [2, 3]
    assert [r["budget"] for r in speed["jiio"]] == [2, 4]
    for r in speed["apgd"]:
        # One forward solve per step and one at the start, each at least one f evaluation.
        assert r["iterations"] == r["budget"] and r["f_evals"] >= r["budget"] + 1
    assert speed["target_robust_accuracy"] == speed["apgd"][-1]["robust_accuracy"]
    hits = [
        r["seconds"]
        for r in speed["apgd"]
        if r["robust_accuracy"] <= speed["target_robust_accuracy"]
    ]
    assert speed["pgd_seconds_to_target"] == min(hits)


def test_unknown_baseline_is_refused() -> None:
    result = runner.invoke(
        app, ["bench", "--task", "attack", "--baseline", "fgsm", "--device", "cpu"]
    )
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "--baseline" in line and "fgsm" in line
