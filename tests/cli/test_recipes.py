"""The recipes in recipes/: each one trains through ``jiio train --config`` for one short
epoch, and options typed on the command line override a recipe's values."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omniglot_fixtures import layout, write_folder
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.config import load_config_file

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))
runner = CliRunner(env={"NO_COLOR": "1"})

# What keeps each run short without changing the recipe's model: one epoch of one or two
# steps, a few JIIO iterations, and for the image tasks a tiny file instead of MNIST-5k.
_SHORT_IMAGES = ["--epochs", "1", "--batch-size", "8", "--iterations", "3"]
_SHORT_META = ["--epochs", "1", "--iterations", "3"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 random 28×28 grey images with labels 0..9 (the recipes' model size)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    images = (rng.random((16, 28, 28)) * 255).astype(np.uint8)
    np.savez(path, images=images, labels=np.arange(16) % 10)
    return path


def _short_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each task's training scores held-out data every epoch (40 episodes per way count,
    500 images) and a decoder fits its latent density on 2,000 codes; a few keep the test
    short. The recipes' own values reach the run unchanged otherwise."""
    from jiio_cli.tasks.adversarial import training as adversarial
    from jiio_cli.tasks.fewshot import training as meta
    from jiio_cli.tasks.inverse import training as inverse

    def shortened(module: Any, name: str, **fewer: int) -> None:
        original: Callable[..., Any] = getattr(module, name)

        def run(spec: Any, *args: Any, **kwargs: Any) -> Any:
            return original(dataclasses.replace(spec, **fewer), *args, **kwargs)

        monkeypatch.setattr(module, name, run)

    shortened(meta, "train_meta", eval_episodes=1)
    shortened(inverse, "train_inverse", eval_size=2, density_images=8)
    shortened(adversarial, "train_adversarial", eval_size=2)


def test_every_shipped_model_has_a_recipe() -> None:
    shipped = {p.stem for p in (ROOT / "models").glob("*.safetensors")}
    assert shipped <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
@pytest.mark.slow
def test_recipe_trains_a_few_steps(
    recipe: Path, digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = load_config_file(recipe)
    monkeypatch.chdir(ROOT)  # a recipe's --init path is relative to the repository
    _short_evaluation(monkeypatch)
    if values["task"] == "meta":
        per_step = str(values["tasks-per-step"])
        extra = [*_SHORT_META, "--episodes-per-epoch", per_step]
        if values.get("dataset") == "omniglot":  # Omniglot itself is not in the repository
            omniglot = layout({"Greek": 5, "Korean": 5, "Tagalog": 3})
            extra += ["--data", str(write_folder(tmp_path / "omniglot", omniglot))]
    else:
        extra = [*_SHORT_IMAGES, "--data", str(digits)]
    out = tmp_path / "run"
    args = ["train", "--config", str(recipe), *extra, "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["task"] == values["task"] and doc["epochs"] == 1 and 1 <= doc["steps"] <= 2
    assert Path(doc["checkpoint_last"]).exists()


def _tiny_denoise_recipe(tmp_path: Path, digits: Path, **more: Any) -> Path:
    recipe = tmp_path / "tiny.toml"
    lines = [
        'task = "denoise"',
        f'data = "{digits}"',
        "image-size = 12",
        "width = 8",
        "latent-dim = 4",
        "batch-size = 8",
        "iterations = 3",
        "epochs = 2",
        *(f"{key} = {json.dumps(value)}" for key, value in more.items()),
    ]
    recipe.write_text("\n".join(lines) + "\n")
    return recipe


def test_flags_override_the_recipe(tmp_path: Path, digits: Path) -> None:
    recipe = _tiny_denoise_recipe(tmp_path, digits, sigma="0.3")
    out = tmp_path / "run"
    args = ["train", "--config", str(recipe), "--epochs", "1", "--out", str(out)]
    result = runner.invoke(app, [*args, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["epochs"] == 1 and doc["task"] == "denoise"  # the flag, not the file's 2
    from jiio_cli.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(out / "denoise-last.safetensors")
    training = checkpoint.training_config
    assert training is not None
    assert training["corruption"]["sigma"] == [0.3, 0.3]  # the file's, not the default 0.2
    assert checkpoint.model_config["latent_dim"] == 4


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("epochz = 2\n", "'epochz', which is not an option of this command"),
        ('task = "adversarial"\nlatent-dim = 8\n', "--latent-dim does not apply to --task"),
        ("epochs = 0\n", "--epochs"),
        ("epochs = \n", "not valid TOML"),
    ],
)
def test_bad_recipes_are_one_line_usage_errors(tmp_path: Path, content: str, needle: str) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(content)
    result = runner.invoke(app, ["train", "--config", str(recipe), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and needle in result.stderr
    assert "Traceback" not in result.output


def test_bench_reads_a_recipe_too(tmp_path: Path) -> None:
    recipe = tmp_path / "bench.json"
    recipe.write_text(json.dumps({"task": "adapt", "eps": "0.3"}))
    result = runner.invoke(app, ["bench", "--config", str(recipe), "--device", "cpu"])
    assert result.exit_code == 2
    assert "--eps does not apply to --task adapt (it is for --task attack)" in result.stderr
