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
from jiio_cli.cli.commands.train_defaults import TASK_DEFAULTS

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
    assert values["epochs"] == TASK_DEFAULTS["denoise"]["epochs"]
    assert values["max_train"] == TASK_DEFAULTS["denoise"]["max_train"]


def test_typed_flags_override_the_task_defaults(resolved: list[dict[str, Any]]) -> None:
    values = _resolve(resolved, "--task", "adversarial", "--epochs", "5", "--lr", "0.01")
    assert values["epochs"] == 5 and values["lr"] == 0.01
    assert values["jac_weight"] == TASK_DEFAULTS["adversarial"]["jac_weight"]  # not typed
    values = _resolve(resolved, "--task", "inpaint", "--max-train", "300")
    assert values["max_train"] == 300
    assert values["epochs"] == TASK_DEFAULTS["inpaint"]["epochs"]


@pytest.mark.parametrize(
    ("recipe", "task"), [("mnist-decoder", "inpaint"), ("mnist-classifier", "adversarial")]
)
def test_a_recipe_keeps_the_declared_defaults(
    resolved: list[dict[str, Any]], recipe: str, task: str
) -> None:
    """The shipped models' recipes train what they trained: the file's values, and the
    declared defaults (all of MNIST-5k, not the short run's share) for what it leaves out."""
    values = _resolve(resolved, "--config", str(ROOT / "recipes" / f"{recipe}.toml"))
    assert values["task"].value == task
    assert values["max_train"] is None and values["max_train"] != TASK_DEFAULTS["inpaint"].get(
        "max_train"
    )
    assert values["epochs"] == {"inpaint": 16, "adversarial": 3}[task]
    assert values["batch_size"] == DECLARED["batch_size"]


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
    shown = {task: d["epochs"] for task, d in TASK_DEFAULTS.items()}
    assert f"(decoders {shown['denoise']}, adversarial {shown['adversarial']}, meta" in text
    assert f"meta {shown['meta']}; else 10)" in text
    assert f"(decoders {TASK_DEFAULTS['denoise']['max_train']}; else all)" in text
    assert "(meta centroids; else head)" in text
    epochs_line = next(line for line in result.stdout.splitlines() if "--epochs" in line)
    assert "[default:" not in epochs_line  # the declared 10 holds only for recipes
