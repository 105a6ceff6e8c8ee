"""Meta-training a FiLM-conditioned DEQ classifier for few-shot adaptation, end to end.

Wires the pieces together: the class pool (the shipped glyph tasks by default, or an
Omniglot-layout folder), episodes drawn per step from the step's seeded generator (so a
resumed run replays the same episodes), the meta-loss of
:mod:`jiio_cli.tasks.fewshot.classification`,
validation accuracy on fixed episodes of held-out classes, and the shared training loop.
No printing here: progress goes through a callback.

A fixed 15 % of the meta-training classes (chosen by a seed-independent permutation) are
kept for validation; they pick the ``-best`` checkpoint. The meta-test classes (other
alphabets) are never seen during training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from jiio_cli.data.augment import augment, parse_augmentation
from jiio_cli.data.episodes import (
    ClassPool,
    EpisodeBatch,
    check_episode_shape,
    draw_episodes,
    load_glyph_pool,
    pool_from_characters,
)
from jiio_cli.data.omniglot import normalised_characters, read_omniglot, with_rotations
from jiio_cli.errors import UsageError
from jiio_cli.models import FiLMClassifier, MetaConfig, ProtoNet, ProtoNetConfig
from jiio_cli.tasks.fewshot.classification import AdaptConfig, classify_episodes, meta_loss
from jiio_cli.tasks.fewshot.inner_solvers import task_adapt_settings
from jiio_cli.tasks.fewshot.meta_run import run_meta_training
from jiio_cli.tasks.fewshot.protonet import protonet_loss, protonet_predictions
from jiio_cli.training import StepOutcome, TrainConfig, TrainRun, TrainState, derived_generator

__all__ = [
    "MODEL_TYPES",
    "MetaTrainConfig",
    "adapt_settings",
    "augmented",
    "build_meta_model",
    "episode_accuracy",
    "split_pool",
    "train_meta",
    "training_pools",
]

MODEL_TYPES = ("deq", "protonet")
"""What ``jiio train --task meta`` trains: the FiLM DEQ, or the Prototypical Network
baseline (same data, split, episodes, augmentation and seeds)."""

VALIDATION_FRACTION = 0.15


@dataclass(frozen=True)
class MetaTrainConfig:
    """Everything that defines a run of ``jiio train --task meta``.

    Attributes:
        model: the meta-model's config (``ways`` is the head's K, the most ways served).
        loop: epochs, tasks per step (``batch_size``), learning rate, seed.
        ways: N of the training episodes, cycled step by step (e.g. (5, 20)).
        shots, queries: K and Q per class.
        episodes_per_epoch: tasks per epoch.
        inner: ``jiio`` or ``naive`` (Adam on v with full solves per step).
        inner_iters, inner_memory, alpha_x, alpha_x_final: the JIIO inner solve.
        naive_steps, naive_lr: the naive inner solve.
        context_weight: λ of the penalty λ·mean(v²).
        hyper_step: η of the meta-gradient's path through v* (0: first order).
        jacobian_weight: weight of the Jacobian regulariser.
        data: Omniglot sources (archives or ``alphabet/character`` folders; a single
            path in older checkpoints), or None for the shipped glyph tasks.
        eval_episodes: validation tasks per N.
        model_type: ``deq`` (the FiLM DEQ of ``model``) or ``protonet`` (a
            :class:`~jiio_cli.models.ProtoNet` with ``model``'s channels, image size and
            preprocessing).
        augment: training-image augmentation of every support and query image (e.g.
            ``affine:1``, see :mod:`jiio_cli.data.augment`), ``none`` for none.
        rotations: Omniglot only: rotations by 90/180/270° of the training characters
            are extra classes.
        episode_kinds: kinds of training episodes, cycled step by step (``across``,
            ``within``; see :data:`~jiio_cli.data.episodes.EPISODE_KINDS`).
    """

    model: MetaConfig
    loop: TrainConfig
    ways: tuple[int, ...] = (5,)
    shots: int = 1
    queries: int = 3
    episodes_per_epoch: int = 400
    inner: Literal["jiio", "naive"] = "jiio"
    inner_iters: int = 30
    inner_memory: int = 10
    alpha_x: float = 1.0
    alpha_x_final: float = 0.5
    naive_steps: int = 10
    naive_lr: float = 0.1
    context_weight: float = 1.0
    hyper_step: float = 10.0
    jacobian_weight: float = 0.5
    data: tuple[str, ...] | None = None
    eval_episodes: int = 40
    model_type: str = "deq"
    augment: str = "none"
    rotations: bool = True
    episode_kinds: tuple[str, ...] = ("across",)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def adapt_settings(
    spec: MetaTrainConfig, *, iterations: int | None = None, method: str | None = None
) -> AdaptConfig:
    """The classifier's adaptation settings of a run: its inner solvers
    (:func:`~jiio_cli.tasks.fewshot.inner_solvers.task_adapt_settings`) and its context
    penalty weight ``context_weight``."""
    return task_adapt_settings(
        spec, AdaptConfig, iterations, method, context_weight=spec.context_weight
    )


def split_pool(
    pool: ClassPool, fraction: float = VALIDATION_FRACTION
) -> tuple[ClassPool, ClassPool]:
    """(training, validation) classes: a fixed, seed-independent permutation of the pool."""
    order = torch.randperm(pool.num_classes, generator=torch.Generator().manual_seed(0)).tolist()
    cut = pool.num_classes - max(1, round(fraction * pool.num_classes))

    def take(idx: list[int]) -> ClassPool:
        idx = sorted(idx)
        return ClassPool(
            tuple(pool.images[i] for i in idx),
            tuple(pool.names[i] for i in idx),
            tuple(pool.alphabets[i] for i in idx),
        )

    return take(order[:cut]), take(order[cut:])


def training_pools(spec: MetaTrainConfig) -> tuple[ClassPool, ClassPool]:
    """(training, validation) pools at the model's image size.

    Glyphs: the meta-train scripts, split by :func:`split_pool`. Omniglot: the alphabets
    outside :data:`~jiio_cli.data.omniglot.HELD_OUT_ALPHABETS`; a fixed 15 % of their
    characters validate (unrotated), the others train, with their rotations as extra
    classes when ``spec.rotations``.
    """
    size = spec.model.image_size
    if spec.data is None:
        return split_pool(load_glyph_pool("train").resized(size))
    drawings = read_omniglot([Path(p) for p in spec.data])
    characters = normalised_characters(drawings, size, spec.model.preprocess)
    train_chars, _held_out = characters.split_held_out()
    if train_chars.characters == ():
        raise UsageError("--data holds only the held-out alphabets; nothing to train on")
    train, val = split_pool(pool_from_characters(train_chars))
    if spec.rotations:
        train_chars = train_chars.select(
            [train_chars.characters.index(name) for name in train.names]
        )
        train = pool_from_characters(with_rotations(train_chars))
    return train, val


def build_meta_model(spec: MetaTrainConfig) -> FiLMClassifier | ProtoNet:
    """The untrained model a spec describes."""
    if spec.model_type == "protonet":
        m = spec.model
        return ProtoNet(
            ProtoNetConfig(
                channels=m.channels,
                image_channels=m.image_channels,
                image_size=m.image_size,
                preprocess=m.preprocess,
            )
        )
    return FiLMClassifier(spec.model)


def augmented(
    batch: EpisodeBatch, spec: MetaTrainConfig, generator: torch.Generator
) -> EpisodeBatch:
    """The episodes with every image augmented independently (``spec.augment``)."""
    if spec.augment == "none":
        return batch
    step = parse_augmentation(spec.augment)

    def jitter(images: torch.Tensor) -> torch.Tensor:
        return augment(images.flatten(0, 1), step, generator).view_as(images)

    return EpisodeBatch(
        jitter(batch.support),
        batch.support_labels,
        jitter(batch.query),
        batch.query_labels,
        batch.ways,
    )


def episode_accuracy(
    model: FiLMClassifier | ProtoNet,
    pool: ClassPool,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    settings: AdaptConfig,
    seed: int,
    batch: int = 20,
) -> float:
    """Mean query accuracy over ``episodes`` fixed tasks (episodes from ``seed``)."""
    generator = derived_generator(seed, 7, ways)
    device = next(model.parameters()).device
    correct, total = 0.0, 0
    for start in range(0, episodes, batch):
        count = min(batch, episodes - start)
        ep = draw_episodes(pool, "across", count, ways, shots, queries, generator).to(device)
        if isinstance(model, ProtoNet):
            predicted = protonet_predictions(model, ep)
        else:
            predicted = classify_episodes(model, ep, settings)[0].argmax(-1)
        correct += float((predicted == ep.query_labels).float().sum())
        total += ep.query_labels.numel()
    return correct / max(total, 1)


def _episode_step(
    model: FiLMClassifier | ProtoNet,
    batch: EpisodeBatch,
    settings: AdaptConfig,
    spec: MetaTrainConfig,
    generator: torch.Generator,
) -> StepOutcome:
    """One meta-training step's loss and metrics on a batch of episodes: the prototypical
    loss for a ProtoNet, else the meta-loss through JIIO's inner solve (a step whose inner
    solve failed on any task is not finite)."""
    ways = batch.ways
    if isinstance(model, ProtoNet):
        proto = protonet_loss(model, batch)
        metrics = {
            "ways": float(ways),
            "query_ce": proto.query_ce,
            "query_accuracy": proto.query_accuracy,
        }
        return StepOutcome(proto.loss, metrics, bool(torch.isfinite(proto.loss)))
    result = meta_loss(
        model,
        batch.support,
        batch.support_labels,
        batch.query,
        batch.query_labels,
        ways,
        settings,
        hyper_step=spec.hyper_step,
        jacobian_weight=spec.jacobian_weight,
        generator=generator,
    )
    inner = result.inner
    metrics = {
        "ways": float(ways),
        "query_ce": result.query_ce,
        "query_accuracy": result.query_accuracy,
        "support_objective": float(inner.objective.mean()),
        "residual": float(torch.maximum(inner.residual_z, inner.residual_x).mean()),
    }
    return StepOutcome(result.loss, metrics, not bool(inner.failed.any()))


def _validation_accuracies(
    model: FiLMClassifier | ProtoNet,
    val_pool: ClassPool,
    settings: AdaptConfig,
    spec: MetaTrainConfig,
) -> dict[str, float]:
    """Mean query accuracy on ``spec.eval_episodes`` validation episodes per way count
    (capped at the validation classes), and their mean as ``val_accuracy``."""
    metrics = {}
    for ways in spec.ways:
        shots, queries = spec.shots, spec.queries
        check_episode_shape(val_pool, min(ways, val_pool.num_classes), shots, queries, "val")
        n = min(ways, val_pool.num_classes)
        metrics[f"val_accuracy_{n}way"] = episode_accuracy(
            model, val_pool, n, shots, queries, spec.eval_episodes, settings, spec.loop.seed
        )
    metrics["val_accuracy"] = sum(metrics.values()) / len(metrics)
    return metrics


def train_meta(
    spec: MetaTrainConfig,
    device: torch.device,
    run: TrainRun,
) -> TrainState:
    """Meta-train (or resume) a FiLM DEQ classifier or the Prototypical Network baseline;
    checkpoints ``meta-last``/``meta-best``."""
    torch.manual_seed(spec.loop.seed)
    model = build_meta_model(spec).to(device)
    train_pool, val_pool = training_pools(spec)
    for ways in spec.ways:
        check_episode_shape(train_pool, ways, spec.shots, spec.queries, "the meta-training split")
    settings = adapt_settings(spec)

    def step_fn(_indices: torch.Tensor, step: int, generator: torch.Generator) -> StepOutcome:
        ways = spec.ways[step % len(spec.ways)]
        kind = spec.episode_kinds[step % len(spec.episode_kinds)]
        batch = draw_episodes(
            train_pool, kind, spec.loop.batch_size, ways, spec.shots, spec.queries, generator
        )
        batch = augmented(batch, spec, generator).to(device)
        return _episode_step(model, batch, settings, spec, generator)

    def eval_fn() -> dict[str, float]:
        return _validation_accuracies(model, val_pool, settings, spec)

    return run_meta_training(model, spec, step_fn, eval_fn, run=run, best_key="val_accuracy")
