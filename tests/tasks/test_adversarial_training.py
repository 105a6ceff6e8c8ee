"""Adversarial training of a DEQ classifier: learns, resumes exactly, both inner solvers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import invoke_json
from training_runs import assert_resume_equals_uninterrupted, step_losses
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.errors import UsageError
from jiio_cli.models import ClassifierConfig
from jiio_cli.tasks.adversarial.attacks import JIIOAttackConfig, PGDConfig, ThreatModel
from jiio_cli.tasks.adversarial.training import AdversarialTrainConfig, train_adversarial
from jiio_cli.training import TrainConfig, TrainRun, checkpoint_paths

runner = CliRunner(env={"NO_COLOR": "1"})


def _bars(path: Path, count: int = 48) -> Path:
    """Two classes a classifier can learn: a bright horizontal or vertical bar (12×12)."""
    rng = np.random.default_rng()
    images = rng.uniform(0, 0.2, size=(count, 12, 12))
    labels = rng.integers(0, 2, size=count)
    for i, (label, where) in enumerate(zip(labels, rng.integers(2, 10, size=count), strict=True)):
        if label == 0:
            images[i, where, :] = 1.0
        else:
            images[i, :, where] = 1.0
    np.savez(path, images=(images * 255).astype(np.uint8), labels=labels)
    return path


def _spec(data: Path, epochs: int, inner: str = "jiio", max_train: int | None = None):
    return AdversarialTrainConfig(
        threat=ThreatModel("linf", 0.05),
        model=ClassifierConfig(num_classes=2, image_size=12, channels=8, groups=4),
        loop=TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, seed=3),
        inner=inner,  # type: ignore[arg-type]
        jiio=JIIOAttackConfig(iterations=5, memory=4),
        pgd=PGDConfig(steps=2),
        warmup_epochs=1,
        data=str(data),
        max_train=max_train,
        eval_size=8,
    )


@pytest.mark.slow
def test_training_learns_and_writes_checkpoints(tmp_path: Path) -> None:
    data = _bars(tmp_path / "bars.npz", count=64)
    state = train_adversarial(
        _spec(data, epochs=6), torch.device("cpu"), TrainRun(tmp_path / "run")
    )
    losses = step_losses(state)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    evals = [h for h in state.history if "heldout_clean_accuracy" in h]
    assert len(evals) == 6
    assert 0 <= evals[-1]["heldout_robust_accuracy"] <= evals[-1]["heldout_clean_accuracy"]
    last, best = checkpoint_paths(tmp_path / "run", "adversarial")
    assert last.exists() and best.exists()


@pytest.mark.parametrize("inner", ["jiio", "pgd"])
def test_resume_equals_uninterrupted(tmp_path: Path, inner: str) -> None:
    data = _bars(tmp_path / "bars.npz", count=40)
    spec = _spec(data, epochs=2, inner=inner, max_train=32)
    assert_resume_equals_uninterrupted(train_adversarial, spec, tmp_path, "adversarial", 3)


def test_unlabelled_data_and_labels_beyond_the_classes_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    np.savez(tmp_path / "nolabels.npz", images=rng.integers(0, 255, (8, 12, 12), np.uint8))
    with pytest.raises(UsageError, match="no labels"):
        train_adversarial(
            _spec(tmp_path / "nolabels.npz", 1), torch.device("cpu"), TrainRun(tmp_path / "a")
        )
    np.savez(
        tmp_path / "many.npz",
        images=rng.integers(0, 255, (8, 12, 12), np.uint8),
        labels=np.arange(8),
    )
    with pytest.raises(UsageError, match=r"labels must lie in 0\.\.1"):
        train_adversarial(
            _spec(tmp_path / "many.npz", 1), torch.device("cpu"), TrainRun(tmp_path / "b")
        )


def test_cli_trains_and_the_checkpoint_attacks(tmp_path: Path) -> None:
    data = _bars(tmp_path / "bars.npz", count=24)
    out = tmp_path / "run"
    doc = invoke_json(
        [
            "train",
            "--task",
            "adversarial",
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "12",
            "--image-size",
            "12",
            "--width",
            "8",
            "--num-classes",
            "2",
            "--eps",
            "8/255",
            "--norm",
            "linf",
            "--inner-iters",
            "4",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert doc["task"] == "adversarial" and doc["epochs"] == 1
    assert doc["threat"] == f"linf {8 / 255:g}"
    attack = runner.invoke(
        app,
        [
            "attack",
            "-c",
            doc["checkpoint_last"],
            "--data",
            str(data),
            "--eps",
            "8/255",
            "--iterations",
            "5",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert attack.exit_code == 0, attack.output
    assert json.loads(attack.stdout)["images"] == 24


def test_cli_rejects_naive_inner_for_adversarial(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--task", "adversarial", "--inner", "naive", "--device", "cpu"]
    )
    assert result.exit_code == 2
    assert "--inner jiio or --inner pgd" in result.stderr
