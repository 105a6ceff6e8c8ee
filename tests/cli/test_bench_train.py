"""``training_comparison``: both inner solves train, and the report's arithmetic holds."""

from __future__ import annotations

import pytest
import torch

from jiio_cli.bench.train import training_comparison


@pytest.mark.parametrize(("task", "naive"), [("denoise", "naive"), ("adversarial", "pgd")])
@pytest.mark.slow
def test_training_comparison_reports_both_methods(task: str, naive: str) -> None:
    report = training_comparison(
        task,  # type: ignore[arg-type]
        torch.device("cpu"),
        epochs=1,
        max_train=8,
        batch_size=4,
        eval_size=4,
    )
    metric = "heldout_psnr" if task == "denoise" else "heldout_robust_accuracy"
    for inner in ("jiio", naive):
        row = report[inner]
        assert row["steps"] == 2
        assert row["seconds"] > 0 and row["evaluation_seconds"] > 0
        assert row["seconds_per_step"] == pytest.approx(row["seconds"] / 2)
        assert row[metric] is not None and row["final_loss"] is not None
    assert report["ratio"] == pytest.approx(report[naive]["seconds"] / report["jiio"]["seconds"])
