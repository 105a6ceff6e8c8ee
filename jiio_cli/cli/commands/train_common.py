"""What every ``jiio train`` task shares: the loop's settings from the validated options,
and the fields of the result every task prints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.progress import training_progress
from jiio_cli.config import CommonConfig
from jiio_cli.training import TrainConfig, Trainer, TrainRun, TrainState, checkpoint_paths

__all__ = [
    "ImageTrainCommandConfig",
    "LoopCommandConfig",
    "loop_config",
    "run_summary",
    "timed_training",
]


class LoopCommandConfig(BaseModel):
    """Validated options of the training loop that every ``jiio train`` task takes
    (names as the command line's; ``batch_size`` is tasks per step for meta)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    jac_weight: float = Field(ge=0)
    save_every: int = Field(ge=0)
    max_bad_steps: int = Field(ge=1)
    init: Path | None = None


class ImageTrainCommandConfig(LoopCommandConfig):
    """Validated options that the image tasks add (decoder and classifier training)."""

    image_size: int = Field(ge=8, le=512)
    channels: int = Field(ge=1, le=4)
    width: int = Field(ge=8)
    iterations: int = Field(ge=2)
    max_train: int | None = Field(default=None, ge=1)
    max_grad_norm: float = Field(ge=0)


def loop_config(
    opts: LoopCommandConfig, seed: int, max_grad_norm: float, precision: str = "fp32"
) -> TrainConfig:
    """The training loop's settings, in one step from a task's validated options.

    Args:
        opts: the task's validated options (``batch_size`` is tasks per step for meta).
        seed: the run's seed.
        max_grad_norm: the gradient clip the task resolved (0: off).
        precision: arithmetic of the DEQ cell (decoder tasks).
    """
    loop = opts.model_dump(include={"epochs", "batch_size", "lr", "save_every", "max_bad_steps"})
    init = str(opts.init) if opts.init is not None else None
    return TrainConfig(
        **loop, seed=seed, max_grad_norm=max_grad_norm, precision=precision, init=init
    )


def run_summary(
    state: TrainState, run_dir: Path, name: str, seconds: float, common: CommonConfig
) -> dict[str, Any]:
    """The result fields every task reports: how far the run went, its last loss, its
    time, its checkpoints (``<run_dir>/<name>-last|best.safetensors``), device and seed."""
    last, best = checkpoint_paths(run_dir, name)
    losses = [h["loss"] for h in state.history if "loss" in h]
    return {
        "epochs": state.epoch,
        "steps": state.step,
        "final_loss": losses[-1] if losses else None,
        "seconds": seconds,
        "checkpoint_last": str(last),
        "checkpoint_best": str(best),
        "device": str(common.torch_device),
        "seed": common.seed,
    }


def timed_training(
    train: Trainer,
    spec: Any,
    device: torch.device,
    run_dir: Path,
    resume: bool,
    show: bool,
) -> tuple[TrainState, float]:
    """Run ``train(spec, device, TrainRun(run_dir, resume, progress))`` under the training
    progress display (bar or plain lines when ``show``; the plan, estimate and Ctrl-C lines
    always) and return its final state with the seconds it took."""
    started = time.perf_counter()
    with training_progress(spec.loop.epochs, enabled=show) as progress:
        state = train(spec, device, TrainRun(run_dir, resume, progress))
    return state, time.perf_counter() - started
