"""The ``adversarial`` branch of ``jiio train``: a robust DEQ classifier.

Kept apart from :mod:`jiio_cli.cli.commands.train` so that each task's option checks and
wiring read in one place; ``train`` parses the shared options and calls :func:`run`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from jiio_cli.bench.timing import StepClock
from jiio_cli.cli.commands.train_common import ImageTrainCommandConfig, loop_config, run_summary
from jiio_cli.cli.output import emit
from jiio_cli.cli.progress import training_progress
from jiio_cli.config import CommonConfig, parse_eps
from jiio_cli.distributed import DistributedContext
from jiio_cli.errors import UsageError
from jiio_cli.models import ClassifierConfig
from jiio_cli.training import TrainRun

__all__ = ["AdversarialTrainCommandConfig", "run"]


class AdversarialTrainCommandConfig(ImageTrainCommandConfig):
    """Validated options of ``jiio train --task adversarial``."""

    eps: str
    norm: str = Field(pattern="^(linf|l2)$")
    inner: str = Field(pattern="^(jiio|pgd)$")
    num_classes: int = Field(ge=2)
    pgd_steps: int = Field(ge=1)
    warmup_epochs: int = Field(ge=0)


def run(
    opts: AdversarialTrainCommandConfig,
    common: CommonConfig,
    data: Path | None,
    out: Path | None,
    resume: bool,
    context: DistributedContext,
    device: torch.device,
) -> None:
    """Train (or resume) on ``device`` and print the result (table, or JSON with
    ``--json``); under torchrun only rank 0 shows progress and prints."""
    eps = parse_eps(opts.eps)
    if opts.norm == "linf" and eps > 1:
        raise UsageError(f"--eps {opts.eps}: an L∞ budget above 1 covers the whole pixel box")
    if opts.width % 8:
        raise UsageError(
            f"invalid --width {opts.width}: must be a multiple of 8 (GroupNorm uses 8 groups)"
        )
    from jiio_cli.tasks.adversarial.attacks import JIIOAttackConfig, PGDConfig, ThreatModel
    from jiio_cli.tasks.adversarial.training import AdversarialTrainConfig, train_adversarial

    spec = AdversarialTrainConfig(
        threat=ThreatModel(opts.norm, eps),  # type: ignore[arg-type]
        model=ClassifierConfig(
            num_classes=opts.num_classes,
            image_channels=opts.channels,
            image_size=opts.image_size,
            channels=opts.width,
        ),
        loop=loop_config(opts, common.seed, opts.max_grad_norm),
        inner=opts.inner,  # type: ignore[arg-type]
        jiio=JIIOAttackConfig(iterations=opts.iterations),
        pgd=PGDConfig(steps=opts.pgd_steps),
        warmup_epochs=opts.warmup_epochs,
        jacobian_weight=opts.jac_weight,
        data=str(data) if data is not None else None,
        max_train=opts.max_train,
    )
    run_dir = out if out is not None else Path("runs") / "adversarial"
    started = time.perf_counter()
    show = context.is_main and not common.json_output
    clock = StepClock(device)
    with training_progress(opts.epochs, enabled=show) as progress:

        def on_event(event: dict[str, Any]) -> None:
            clock(event)
            progress(event)

        state = train_adversarial(spec, device, TrainRun(run_dir, resume, on_event))
    if context.is_main:
        _report(opts, eps, state, time.perf_counter() - started, clock, run_dir, common, context)


def _report(
    opts: AdversarialTrainCommandConfig,
    eps: float,
    state: Any,
    seconds: float,
    clock: StepClock,
    run_dir: Path,
    common: CommonConfig,
    context: DistributedContext,
) -> None:
    """Print the run's result: a table, or one JSON document with ``--json``."""
    evals = [h for h in state.history if "heldout_robust_accuracy" in h]
    result: dict[str, Any] = {
        "task": "adversarial",
        "inner": opts.inner,
        "threat": f"{opts.norm} {eps:g}",
        "heldout_clean_accuracy": evals[-1]["heldout_clean_accuracy"] if evals else None,
        "heldout_robust_accuracy": evals[-1]["heldout_robust_accuracy"] if evals else None,
        "best_heldout_robust_accuracy": state.best_metric if evals else None,
        **run_summary(state, run_dir, "adversarial", seconds, common),
        "train_step_seconds": clock.train_seconds,
        "evaluation_seconds": clock.other_seconds,
        "processes": context.world_size,
    }
    emit(result, json_output=common.json_output, title="jiio train --task adversarial")
