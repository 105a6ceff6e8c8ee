"""``jiio train --task T`` with no other option resolves to T's defaults (the short runs of
``train_defaults.TASK_DEFAULTS``); typed flags and a recipe override them, and a recipe's
untyped options keep the command's declared defaults. Resolution only: the task runners
are replaced by ones that record what they were given, so nothing trains."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.cli.commands import train_defaults
from jiio_cli.cli.commands.train_defaults import TASK_DEFAULTS, default_help

# The module, not the command function that jiio_cli.cli.commands exports under its name.
train_command = importlib.import_module("jiio_cli.cli.commands.train")

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner(env={"NO_COLOR": "1"})
DECLARED = {
    name: parameter.default
    for name, parameter in inspect.signature(train_command.train).parameters.items()
}


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The option values each ``jiio train`` invocation hands its task's runner."""
    seen: list[dict[str, Any]] = []

    def record(values: dict[str, Any], *_: Any) -> None:
        seen.append(dict(values))

    monkeypatch.setattr(train_command, "_RUNNERS", dict.fromkeys(train_command._RUNNERS, record))
    return seen


def _resolve(resolved: list[dict[str, Any]], *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["train", *args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return resolved.pop()


@pytest.mark.parametrize("task", sorted(TASK_DEFAULTS))
def test_a_bare_task_takes_its_defaults(resolved: list[dict[str, Any]], task: str) -> None:
    values = _resolve(resolved, "--task", task)
    defaults = TASK_DEFAULTS[task]
    # The premise: each task's table changes the declared epochs (10), so the check can fail.
    assert defaults["epochs"] != DECLARED["epochs"]
    assert {name: values[name] for name in defaults} == defaults
    untouched = set(DECLARED) - set(defaults) - {"ctx", "task", "device"}
    assert {n: values[n] for n in untouched} == {n: DECLARED[n] for n in untouched}


def test_the_default_task_is_denoise_with_its_defaults(resolved: list[dict[str, Any]]) -> None:
    values = _resolve(resolved)
    assert values["task"].value == "denoise"
    assert {name: values[name] for name in TASK_DEFAULTS["denoise"]} == TASK_DEFAULTS["denoise"]


def test_typed_flags_override_the_task_defaults(resolved: list[dict[str, Any]]) -> None:
    values = _resolve(resolved, "--task", "adversarial", "--epochs", "5", "--lr", "0.01")
    assert values["epochs"] == 5 and values["lr"] == 0.01
    assert values["jac_weight"] == TASK_DEFAULTS["adversarial"]["jac_weight"]  # not typed
    values = _resolve(resolved, "--task", "inpaint", "--batch-size", "32")
    assert values["batch_size"] == 32
    assert values["epochs"] == TASK_DEFAULTS["inpaint"]["epochs"]


@pytest.mark.parametrize(
    ("recipe", "task"), [("mnist-decoder", "inpaint"), ("mnist-classifier", "adversarial")]
)
def test_a_shipped_recipe_trains_what_it_trained(
    resolved: list[dict[str, Any]], recipe: str, task: str
) -> None:
    """The shipped models' recipes: the file's values, and all of MNIST-5k."""
    values = _resolve(resolved, "--config", str(ROOT / "recipes" / f"{recipe}.toml"))
    assert values["task"].value == task
    assert values["epochs"] == {"inpaint": 16, "adversarial": 3}[task]
    assert values["batch_size"] == 64 and values["max_train"] is None


@pytest.mark.parametrize("task", ["denoise", "adversarial"])
def test_a_recipe_keeps_the_declared_defaults(
    resolved: list[dict[str, Any]], tmp_path: Path, task: str
) -> None:
    """What a recipe leaves out takes the command's declared default, not the short run's."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'task = "{task}"\n')
    values = _resolve(resolved, "--config", str(recipe))
    defaults = TASK_DEFAULTS[task]
    # The premise: the task's short run changes something, so the check can fail.
    assert any(defaults[name] != DECLARED[name] for name in defaults)
    assert {name: values[name] for name in defaults} == {name: DECLARED[name] for name in defaults}


def test_a_meta_recipe_keeps_its_values_and_a_flag_overrides_it(
    resolved: list[dict[str, Any]],
) -> None:
    recipe = str(ROOT / "recipes" / "meta-glyphs-metric.toml")
    values = _resolve(resolved, "--config", recipe, "--epochs", "2")
    assert values["epochs"] == 2 and values["jac_weight"] == 2.0 and values["hyper_step"] == 1.0
    assert values["image_size"] == 20 and values["queries"] == 2


def test_meta_with_another_dataset_keeps_the_declared_defaults(
    resolved: list[dict[str, Any]],
) -> None:
    values = _resolve(resolved, "--task", "meta", "--dataset", "sinusoid")
    assert values["epochs"] == DECLARED["epochs"] and values["readout"] == DECLARED["readout"]
    assert values["epochs"] != TASK_DEFAULTS["meta"]["epochs"]


def test_help_shows_the_per_task_defaults() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for help_start, name in [
        ("Epochs", "epochs"),
        ("Images per batch", "batch_size"),
        ("Use only the first N images", "max_train"),
        ("Query read-out", "readout"),
    ]:
        assert f"{help_start} ({default_help(name, DECLARED[name])})." in text
    for flag in ("--epochs", "--batch-size"):  # the declared values hold only for recipes
        line = next(line for line in result.stdout.splitlines() if flag in line)
        assert "[default:" not in line


def test_default_help_groups_the_tasks_that_share_a_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {
        "denoise": {"epochs": 3, "batch_size": 16},
        "inpaint": {"epochs": 3, "batch_size": 16},
        "generate": {"epochs": 3, "batch_size": 16},
        "adversarial": {"epochs": 2, "lr": 2e-3},
        "meta": {"epochs": 3, "lr": 2e-3},
    }
    monkeypatch.setattr(train_defaults, "TASK_DEFAULTS", table)
    assert default_help("epochs", 10) == "decoders/meta 3, adversarial 2; else 10"
    assert default_help("batch_size", 64) == "decoders 16; else 64"
    assert default_help("lr", 1e-3) == "adversarial/meta 0.002; else 0.001"
    assert default_help("max_train", None) == "default all"
