"""The checkpointed run of a meta-training: shared by the glyph and the sinusoid trainers.

Both write ``meta-last``/``meta-best`` checkpoints of task ``meta`` whose metadata name the
model's kind and configuration and hold the run's whole spec, so that ``jiio adapt`` and
``jiio bench`` rebuild the adaptation settings the model was trained with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from jiio_cli.models import ProtoNet
from jiio_cli.models.base import DEQModel
from jiio_cli.training import StepFn, TrainConfig, TrainRun, TrainState, run_training

__all__ = ["MetaRunConfig", "run_meta_training"]


class MetaRunConfig(Protocol):
    """What the run reads of a meta-training spec (read-only, as on a frozen dataclass).

    Attributes:
        loop: the training loop's settings (epochs, batch size, optimiser, seed, ...).
        episodes_per_epoch: tasks per epoch.
    """

    @property
    def loop(self) -> TrainConfig: ...
    @property
    def episodes_per_epoch(self) -> int: ...
    def to_json(self) -> dict[str, Any]: ...


def run_meta_training(
    model: DEQModel | ProtoNet,
    spec: MetaRunConfig,
    step_fn: StepFn,
    eval_fn: Callable[[], dict[str, float]],
    *,
    run: TrainRun,
    best_key: str,
) -> TrainState:
    """Train ``model`` by ``step_fn`` on ``spec.episodes_per_epoch`` tasks an epoch, keeping as
    ``meta-best`` the checkpoint with the largest ``best_key`` of ``eval_fn``'s metrics
    (see :func:`jiio_cli.training.run_training`)."""
    meta = {
        "task": "meta",
        "model_kind": model.kind,
        "model_config": model.config.to_dict(),
        "training_config": spec.to_json(),
    }
    return run_training(
        model=model,
        train_size=spec.episodes_per_epoch,
        step_fn=step_fn,
        eval_fn=eval_fn,
        config=spec.loop,
        run=run,
        name="meta",
        meta=meta,
        best_key=best_key,
    )
