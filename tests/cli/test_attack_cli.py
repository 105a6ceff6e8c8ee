"""``jiio attack`` end to end on a small classifier checkpoint, and its bad inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from classifiers import save_classifier
from PIL import Image
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.cli.commands.attack import _unconverged_items
from jiio_cli.tasks.adversarial.attacks import SCORING_SOLVE, classify
from jiio_cli.tasks.adversarial.data import load_attack_target
from jiio_cli.tasks.adversarial.sweep import SweepResult

runner = CliRunner(env={"NO_COLOR": "1"})
FAST = ["--iterations", "6", "--memory", "4", "--pgd-steps", "2", "--device", "cpu"]


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    return save_classifier(tmp_path / "clf.safetensors")


def _attack_json(*args: str) -> dict:
    """Run ``jiio attack ARGS --json``; it must succeed with one JSON document on stdout."""
    result = runner.invoke(app, ["attack", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _labelled_folder(root: Path, classes: int, per_class: int, size: int = 20) -> Path:
    rng = np.random.default_rng()
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_json_document_has_one_row_per_budget_and_method(classifier: Path) -> None:
    doc = _attack_json(
        *("-c", str(classifier), "--eps", "0.1,8/255", "--method", "both"),
        *("--max-images", "6", "--batch-size", "4", *FAST),
    )
    rows = doc["rows"]
    assert [(r["method"], r["eps"]) for r in rows] == [
        ("jiio", 0.1),
        ("pgd", 0.1),
        ("worst", 0.1),
        ("jiio", pytest.approx(8 / 255)),
        ("pgd", pytest.approx(8 / 255)),
        ("worst", pytest.approx(8 / 255)),
    ]
    for row in rows:
        for key in (
            "clean_accuracy",
            "robust_accuracy",
            "success_rate",
            "mean_norm",
            "max_norm",
            "seconds",
            "attack_unconverged",
            "mean_iterations",
        ):
            assert key in row
        assert row["max_norm"] <= row["eps"]
    assert doc["images"] == 6
    assert 0 <= doc["clean_unconverged"] <= 1


def test_save_examples_writes_pngs_and_a_grid(classifier: Path, tmp_path: Path) -> None:
    folder = tmp_path / "examples"
    result = runner.invoke(
        app,
        [
            *("attack", "-c", str(classifier), "--eps", "0.2", "--norm", "l2"),
            *("--max-images", "5", "--save-examples", str(folder), "--examples", "3"),
            *("--json", *FAST),
        ],
    )
    assert result.exit_code == 0, result.output
    grid = folder / "jiio-l2-0.2-grid.png"
    assert grid.exists()
    pngs = sorted((folder / "jiio-l2-0.2").glob("*.png"))
    assert len(pngs) == 3
    with Image.open(grid) as picture:
        assert picture.width > 3 * 28 and picture.height > 3 * 28
    assert not list(folder.rglob(".*.tmp"))


def test_labelled_folder_is_resized_to_the_model(tmp_path: Path) -> None:
    clf = save_classifier(tmp_path / "c3.safetensors", num_classes=3, size=16)
    data = _labelled_folder(tmp_path / "data", classes=3, per_class=2)
    doc = _attack_json("-c", str(clf), "--data", str(data), "--eps", "0.05", *FAST)
    assert doc["images"] == 6


@pytest.mark.parametrize("eps", ["8/0", "-1", "abc", "0.1,,0.2", "2"])
def test_malformed_eps_is_one_line_and_exit_2(classifier: Path, eps: str) -> None:
    result = runner.invoke(app, ["attack", "-c", str(classifier), "--eps", eps, *FAST])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_generative_checkpoint_is_refused() -> None:
    decoder = Path(__file__).resolve().parents[2] / "models" / "mnist-decoder.safetensors"
    result = runner.invoke(app, ["attack", "-c", str(decoder), *FAST])
    assert result.exit_code == 2
    assert "task" in result.stderr


def test_labels_out_of_range_and_empty_folder(tmp_path: Path) -> None:
    clf = save_classifier(tmp_path / "c3.safetensors", num_classes=3, size=16)
    data = _labelled_folder(tmp_path / "data", classes=5, per_class=1)
    result = runner.invoke(app, ["attack", "-c", str(clf), "--data", str(data), *FAST])
    assert result.exit_code == 2
    assert "labels must lie in 0..2" in result.stderr
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["attack", "-c", str(clf), "--data", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_shipped_classifier_is_accurate_and_attackable(tmp_path: Path) -> None:
    """The default checkpoint loads, classifies held-out digits well, and an attack at
    a large budget lowers its accuracy (first 40 held-out digits: 4 of each class)."""
    rows = _attack_json(
        *("--eps", "0,3", "--norm", "l2", "--max-images", "40"),
        *("--iterations", "30", "--device", "cpu"),
    )["rows"]
    assert rows[0]["clean_accuracy"] >= 0.9
    assert rows[0]["robust_accuracy"] == rows[0]["clean_accuracy"]  # ε = 0
    assert rows[1]["robust_accuracy"] < rows[1]["clean_accuracy"] - 0.2


@pytest.mark.slow
def test_standard_method_names_the_attacks_that_broke_each_image(classifier: Path) -> None:
    doc = _attack_json(
        *("-c", str(classifier), "--eps", "0.5", "--norm", "l2"),
        *("--method", "standard", "--apgd-steps", "3", "--max-images", "5"),
        *("--batch-size", "3", *FAST),
    )
    rows = doc["rows"]
    assert [r["method"] for r in rows] == ["jiio", "apgd-ce", "apgd-dlr", "pgd", "standard"]
    assert [r["mean_iterations"] for r in rows[1:3]] == [3, 3]
    (per_image,) = doc["per_image"]
    assert (per_image["norm"], per_image["eps"]) == ("l2", 0.5)
    broken = per_image["broken_by"]
    assert len(broken) == 5 and len(per_image["eval_unconverged"]) == 5
    correct = round(5 * rows[0]["clean_accuracy"])
    for row in rows[:4]:
        flipped = sum(row["method"] in names for names in broken)
        assert row["robust_accuracy"] == pytest.approx((correct - flipped) / 5, abs=1e-6)
    standard = rows[-1]
    survivors = (correct - sum(bool(names) for names in broken)) / 5
    if standard["unconverged_counted_broken"]:
        assert standard["robust_accuracy"] <= survivors + 1e-6
    else:
        assert standard["robust_accuracy"] == pytest.approx(survivors, abs=1e-6)
    assert standard["robust_accuracy"] <= min(r["robust_accuracy"] for r in rows[:4])


@pytest.mark.slow
def test_apgd_method_runs_both_losses_with_a_worst_row(classifier: Path) -> None:
    rows = _attack_json(
        *("-c", str(classifier), "--eps", "0.1", "--method", "apgd"),
        *("--apgd-steps", "2", "--apgd-restarts", "2", "--max-images", "3", *FAST),
    )["rows"]
    assert [r["method"] for r in rows] == ["apgd-ce", "apgd-dlr", "worst"]
    assert rows[0]["mean_iterations"] == 4  # 2 steps x 2 restarts
    assert all(r["max_norm"] <= 0.1 for r in rows)


def _scoring_converges(checkpoint: Path, images: int, budget: int) -> torch.Tensor:
    """Whether the scoring solve with ``budget`` iterations converges on each of the first
    ``images`` images of the default set (the premise of the tests below)."""
    target = load_attack_target(checkpoint, None, images, torch.device("cpu"))
    solve = dataclasses.replace(SCORING_SOLVE, max_iter=budget)
    return classify(target.model, target.images, solve).converged


# At ε = 0 the adversarial images are the clean ones: the scoring solve's convergence on
# the clean images decides it for both.
_EPS0 = ("--eps", "0", "--norm", "l2", "--max-images", "4", *FAST)


@pytest.mark.parametrize("allow", [False, True])
def test_an_unconverged_scoring_solve_follows_the_rule(
    classifier: Path, tmp_path: Path, allow: bool
) -> None:
    """Exit 1 after the JSON (with --allow-unconverged: 0 and one warning), the items named,
    no example written from an unconverged verdict unless allowed."""
    assert not _scoring_converges(classifier, 4, budget=1).any()
    folder = tmp_path / "examples"
    args = ["attack", "-c", str(classifier), *_EPS0, "--forward-iterations", "1", "--json"]
    args += ["--save-examples", str(folder), *(["--allow-unconverged"] if allow else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == (0 if allow else 1), result.output
    assert "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert doc["clean_unconverged"] == 1.0 and doc["rows"][0]["eval_unconverged"] == 1.0
    names = ["the clean inputs (100.0%)", "L2 0: 4 adversarial images (100.0%)"]
    assert doc["unconverged"] == names
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(("error:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("warning:" if allow else "error:")
    assert all(name in lines[0] for name in names)
    if not allow:
        assert "raise --forward-iterations (now 1)" in lines[0]
    assert folder.exists() == allow


def test_the_table_comes_before_the_error(classifier: Path) -> None:
    args = ["attack", "-c", str(classifier), *_EPS0, "--forward-iterations", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "jiio attack (4 images" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: the solve did not converge")


def test_converged_scoring_solves_exit_0_without_a_warning(classifier: Path) -> None:
    assert _scoring_converges(classifier, 4, budget=SCORING_SOLVE.max_iter).all()
    result = runner.invoke(app, ["attack", "-c", str(classifier), *_EPS0, "--json"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "error" not in result.stderr
    doc = json.loads(result.stdout)
    assert doc["unconverged"] == [] and doc["clean_unconverged"] == 0


def test_unconverged_items_name_shares_and_counts() -> None:
    """1 of 32 clean inputs and 1 of 100 adversarial images at one budget, by hand."""
    result = SweepResult(
        rows=[],
        clean_unconverged=1 / 32,
        clean_predictions=torch.zeros(32, dtype=torch.long),
        eval_unconverged={
            ("l2", 1.0): [True] + [False] * 99,
            ("linf", 0.1): [False] * 100,
            ("linf", 0.2): [True, True, False, False],
        },
    )
    assert _unconverged_items(result) == [
        "the clean inputs (3.1%)",
        "L2 1: 1 adversarial image (1.0%)",
        "L∞ 0.2: 2 adversarial images (50.0%)",
    ]
