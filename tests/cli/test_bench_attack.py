"""``jiio bench --task attack``: runs, and its numbers are internally consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from classifiers import save_classifier
from PIL import Image
from typer.testing import CliRunner

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
