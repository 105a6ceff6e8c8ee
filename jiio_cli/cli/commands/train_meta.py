"""The ``meta`` branch of ``jiio train``: meta-train a few-shot FiLM DEQ classifier.

Kept apart from :mod:`jiio_cli.cli.commands.train` so that the task's option checks and
wiring read in one place; ``train`` parses the shared options and calls :func:`run`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.output import emit
from jiio_cli.cli.progress import training_progress
from jiio_cli.config import CommonOptions
from jiio_cli.errors import UsageError
from jiio_cli.training import TrainConfig, checkpoint_paths

__all__ = ["MetaTrainOptions", "parse_ways", "run"]


def parse_ways(text: str) -> tuple[int, ...]:
    """``5`` or a list ``5,20`` (training episodes cycle through the values)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(
            f"invalid --ways {text!r}: give a number like 5 or a list like 5,20"
        ) from None
    if not values or any(v < 2 for v in values):
        raise UsageError(f"invalid --ways {text!r}: every value must be at least 2")
    return values


class MetaTrainOptions(BaseModel):
    """Validated options of ``jiio train --task meta``."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern="^(glyphs|omniglot|sinusoid)$")
    ways: str
    shots: int = Field(ge=1, le=50)
    queries: int = Field(ge=1, le=100)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    episodes_per_epoch: int = Field(ge=1)
    lr: float = Field(gt=0)
    image_size: int = Field(ge=8, le=128)
    width: int = Field(ge=8)
    context_dim: int = Field(ge=1)
    inner: str = Field(pattern="^(jiio|naive)$")
    inner_iters: int = Field(ge=2)
    naive_steps: int = Field(ge=1)
    hyper_step: float = Field(ge=0)
    context_step: float = Field(gt=0)
    jac_weight: float = Field(ge=0)
    save_every: int = Field(ge=0)
    max_bad_steps: int = Field(ge=1)


def run(
    opts: MetaTrainOptions,
    common: CommonOptions,
    data: Path | None,
    out: Path | None,
    resume: bool,
) -> None:
    """Train (or resume) and print the result (table, or JSON with ``--json``)."""
    ways = parse_ways(opts.ways)
    if opts.width % 8:
        raise UsageError(
            f"invalid --width {opts.width}: must be a multiple of 8 (GroupNorm uses 8 groups)"
        )
    if opts.dataset == "sinusoid":
        raise UsageError(
            "--dataset sinusoid: the sinusoid tasks are available from Python "
            "(jiio_cli.data.sinusoid); meta-training on them is not built yet"
        )
    if data is not None and not data.exists():
        raise UsageError(f"--data {data} does not exist")
    if opts.dataset == "omniglot" and data is None:
        raise UsageError("--dataset omniglot needs --data FOLDER (alphabet/character/*.png)")
    from jiio_cli.models import MetaConfig
    from jiio_cli.tasks.meta_training import MetaTrainSpec, train_meta

    spec = MetaTrainSpec(
        model=MetaConfig(
            context_dim=opts.context_dim,
            ways=max(ways),
            channels=opts.width,
            image_size=opts.image_size,
            head_context=True,
        ),
        loop=TrainConfig(
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            lr=opts.lr,
            seed=common.seed,
            save_every=opts.save_every,
            max_bad_steps=opts.max_bad_steps,
        ),
        ways=ways,
        shots=opts.shots,
        queries=opts.queries,
        episodes_per_epoch=opts.episodes_per_epoch,
        inner=opts.inner,  # type: ignore[arg-type]
        inner_iters=opts.inner_iters,
        naive_steps=opts.naive_steps,
        hyper_step=opts.hyper_step,
        alpha_x=opts.context_step,
        alpha_x_final=opts.context_step / 2,
        jacobian_weight=opts.jac_weight,
        data=str(data) if data is not None else None,
    )
    run_dir = out if out is not None else Path("runs") / "meta"
    started = time.perf_counter()
    with training_progress(opts.epochs, enabled=not common.json_output) as progress:
        state = train_meta(spec, common.torch_device, run_dir, resume, progress)
    last, best = checkpoint_paths(run_dir, "meta")
    evals = [h for h in state.history if "val_accuracy" in h]
    result: dict[str, Any] = {
        "task": "meta",
        "inner": opts.inner,
        "data": str(data) if data is not None else "glyphs (sample_data/glyphs.npz)",
        "ways": list(ways),
        "shots": opts.shots,
        "epochs": state.epoch,
        "steps": state.step,
        "final_loss": next((h["loss"] for h in reversed(state.history) if "loss" in h), None),
        **({k: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else {}),
        "best_val_accuracy": state.best_metric if evals else None,
        "seconds": time.perf_counter() - started,
        "checkpoint_last": str(last),
        "checkpoint_best": str(best),
        "device": str(common.torch_device),
        "seed": common.seed,
    }
    emit(result, json_output=common.json_output, title="jiio train --task meta")
