"""Training runs for the resume tests: an uninterrupted run beside an interrupted, resumed one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from jiio_cli.training import Trainer, TrainRun, TrainState, checkpoint_paths


def step_losses(state: TrainState) -> list[float]:
    """The training loss of every step of a run's history (evaluation entries have none)."""
    return [h["loss"] for h in state.history if "loss" in h]


def full_and_resumed_runs(
    train: Trainer, spec: Any, folder: Path, stop_after_steps: int
) -> tuple[TrainState, TrainState]:
    """Train ``spec`` on the CPU into ``folder/full`` without a break, and into
    ``folder/cut`` stopped after ``stop_after_steps`` global steps, then resumed to the end.

    Returns:
        (the uninterrupted run's final state, the resumed run's final state).
    """
    cpu = torch.device("cpu")
    full = train(spec, cpu, TrainRun(folder / "full"))
    train(spec, cpu, TrainRun(folder / "cut", stop_after_steps=stop_after_steps))
    resumed = train(spec, cpu, TrainRun(folder / "cut", resume=True))
    return full, resumed


def assert_resume_equals_uninterrupted(
    train: Trainer, spec: Any, folder: Path, name: str, stop_after_steps: int
) -> None:
    """The run of ``spec`` stopped after ``stop_after_steps`` steps and resumed
    (:func:`full_and_resumed_runs`) took the same step losses as the uninterrupted one and
    ended with the same model in its ``<name>-last`` checkpoint, to the bit."""
    full, resumed = full_and_resumed_runs(train, spec, folder, stop_after_steps)
    assert step_losses(resumed) == step_losses(full)
    assert_same_model_tensors(
        checkpoint_paths(folder / "full", name)[0], checkpoint_paths(folder / "cut", name)[0]
    )


def assert_same_model_tensors(a: Path, b: Path) -> None:
    """Every ``model.*`` tensor of checkpoint ``a`` equals the one of ``b`` exactly."""
    first, second = load_file(a), load_file(b)
    for key in first:
        if key.startswith("model."):
            assert torch.equal(first[key], second[key]), key
