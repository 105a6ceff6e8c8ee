"""Training with the JIIO inner solve against the naive inner solve, side by side.

Both runs use the same task, data subset, seed, epochs and model, one after the other in
this process, each into its own temporary run folder. Reported per method: wall-clock
seconds for the whole run (held-out evaluation included, the same for both), seconds
per training step, the final training loss and the held-out metric after the last
epoch; and the ratio naive seconds / JIIO seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch

from jiio_cli.bench.timing import StepClock
from jiio_cli.models import ClassifierConfig, DecoderConfig
from jiio_cli.tasks.adversarial.attacks import ThreatModel
from jiio_cli.training import TrainConfig, Trainer, TrainRun, TrainState

__all__ = ["TrainBenchTask", "training_comparison"]

TrainBenchTask = Literal["denoise", "adversarial"]


def _summary(state: TrainState, clock: StepClock, metric: str) -> dict[str, Any]:
    losses = [h["loss"] for h in state.history if "loss" in h]
    evals = [h for h in state.history if metric in h]
    return {
        "seconds": clock.train_seconds,
        "evaluation_seconds": clock.other_seconds,
        "steps": state.step,
        "seconds_per_step": clock.train_seconds / max(state.step, 1),
        "final_loss": losses[-1] if losses else None,
        metric: evals[-1][metric] if evals else None,
    }


def _denoise_run(
    inner: str, loop: TrainConfig, max_train: int, eval_size: int
) -> tuple[Any, Trainer]:
    """The settings of the denoising run with this inner solve, and its trainer."""
    from jiio_cli.tasks.inverse.corruption import Corruption
    from jiio_cli.tasks.inverse.training import InverseTrainConfig, train_inverse

    spec = InverseTrainConfig(
        task="denoise",
        corruption=Corruption(sigma=0.2),
        model=DecoderConfig(latent_dim=32, channels=32, half_resolution=True),
        loop=loop,
        inner=inner,  # type: ignore[arg-type]
        max_train=max_train,
        eval_size=eval_size,
        density_images=0,
    )
    return spec, train_inverse


def _adversarial_run(
    inner: str, loop: TrainConfig, max_train: int, eval_size: int
) -> tuple[Any, Trainer]:
    """The settings of the adversarial run with this inner solve, and its trainer."""
    from jiio_cli.tasks.adversarial.training import AdversarialTrainConfig, train_adversarial

    spec = AdversarialTrainConfig(
        threat=ThreatModel("l2", 1.0),
        model=ClassifierConfig(),
        loop=loop,
        inner=inner,  # type: ignore[arg-type]
        jacobian_weight=1.0,
        max_train=max_train,
        eval_size=eval_size,
    )
    return spec, train_adversarial


def training_comparison(
    task: TrainBenchTask,
    device: torch.device,
    *,
    epochs: int,
    max_train: int,
    batch_size: int = 64,
    seed: int = 0,
    eval_size: int = 200,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    on_run: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train twice (JIIO and the naive inner solve) and compare time and quality.

    ``progress(inner, event)`` hears each run's training events
    (:func:`~jiio_cli.training.run_training`); ``on_run(inner, summary)`` gets each run's
    summary as soon as it is done.
    """
    loop = replace(TrainConfig(), epochs=epochs, batch_size=batch_size, seed=seed, lr=2e-3)
    if task == "denoise":
        runner, naive, metric = _denoise_run, "naive", "heldout_psnr"
    else:
        runner, naive, metric = _adversarial_run, "pgd", "heldout_robust_accuracy"
    report: dict[str, Any] = {"train_task": task, "epochs": epochs, "train_images": max_train}
    with tempfile.TemporaryDirectory(prefix="jiio-bench-") as scratch:
        for inner in ("jiio", naive):
            clock = StepClock(device)
            out = Path(scratch) / inner

            def on_event(event: dict[str, Any], inner: str = inner, clock: Any = clock) -> None:
                clock(event)
                if progress is not None:
                    progress(inner, event)

            spec, train = runner(inner, loop, max_train, eval_size)
            state = train(spec, device, TrainRun(out, progress=on_event))
            report[inner] = _summary(state, clock, metric)
            if on_run is not None:
                on_run(inner, report[inner])
    report["ratio"] = report[naive]["seconds"] / report["jiio"]["seconds"]
    return report
