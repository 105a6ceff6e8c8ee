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

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from jiio_cli.data.episodes import (
    ClassPool,
    check_episode_shape,
    load_glyph_pool,
    load_omniglot_folder,
    sample_episodes,
)
from jiio_cli.engine import SolverConfig
from jiio_cli.models import FiLMClassifier, MetaConfig
from jiio_cli.tasks.fewshot.classification import (
    AdaptSettings,
    adapt_context,
    meta_loss,
    query_logits,
)
from jiio_cli.tasks.fewshot.inner_solvers import inner_solvers
from jiio_cli.training import StepOutcome, TrainConfig, TrainState, derived_generator, run_training

__all__ = [
    "MetaTrainSpec",
    "adapt_settings",
    "episode_accuracy",
    "split_pool",
    "train_meta",
    "training_pools",
]

VALIDATION_FRACTION = 0.15


@dataclass(frozen=True)
class MetaTrainSpec:
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
        data: an Omniglot-layout folder, or None for the shipped glyph tasks.
        eval_episodes: validation tasks per N.
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
    data: str | None = None
    eval_episodes: int = 40
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def adapt_settings(
    spec: MetaTrainSpec, *, iterations: int | None = None, method: str | None = None
) -> AdaptSettings:
    """The inner-solve settings of a run (``iterations`` overrides the JIIO budget)."""
    jiio, naive = inner_solvers(spec, iterations)
    return AdaptSettings(
        method=(method or spec.inner),  # type: ignore[arg-type]
        context_weight=spec.context_weight,
        jiio=jiio,
        naive=naive,
        forward=SolverConfig(memory=5, max_iter=40, tol=1e-4),
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


def training_pools(spec: MetaTrainSpec) -> tuple[ClassPool, ClassPool]:
    """(training, validation) pools at the model's image size."""
    size = spec.model.image_size
    if spec.data is None:
        pool = load_glyph_pool("train")
    else:
        pool = load_omniglot_folder(Path(spec.data), size)
    return split_pool(pool.resized(size))


def episode_accuracy(
    model: FiLMClassifier,
    pool: ClassPool,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    settings: AdaptSettings,
    seed: int,
    batch: int = 20,
) -> float:
    """Mean query accuracy over ``episodes`` fixed tasks (episodes from ``seed``)."""
    generator = derived_generator(seed, 7, ways)
    device = next(model.parameters()).device
    correct, total = 0.0, 0
    for start in range(0, episodes, batch):
        count = min(batch, episodes - start)
        ep = sample_episodes(pool, count, ways, shots, queries, generator).to(device)
        result = adapt_context(model, ep.support, ep.support_labels, ways, settings)
        logits = query_logits(
            model, ep.query, result.x, ways, settings.forward, ep.support, ep.support_labels
        )
        correct += float((logits.argmax(-1) == ep.query_labels).float().sum())
        total += ep.query_labels.numel()
    return correct / max(total, 1)


def train_meta(
    spec: MetaTrainSpec,
    device: torch.device,
    out: Path,
    resume: bool,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stop_after_steps: int | None = None,
) -> TrainState:
    """Meta-train (or resume) a FiLM DEQ classifier; checkpoints ``meta-last``/``meta-best``."""
    torch.manual_seed(spec.loop.seed)
    model = FiLMClassifier(spec.model).to(device)
    train_pool, val_pool = training_pools(spec)
    for ways in spec.ways:
        check_episode_shape(train_pool, ways, spec.shots, spec.queries, "the meta-training split")
    settings = adapt_settings(spec)

    def step_fn(_indices: torch.Tensor, step: int, generator: torch.Generator) -> StepOutcome:
        ways = spec.ways[step % len(spec.ways)]
        batch = sample_episodes(
            train_pool, spec.loop.batch_size, ways, spec.shots, spec.queries, generator
        ).to(device)
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

    def eval_fn() -> dict[str, float]:
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

    meta = {
        "task": "meta",
        "model_kind": "meta",
        "model_config": spec.model.to_dict(),
        "training_config": spec.to_json(),
    }
    return run_training(
        model=model,
        train_size=spec.episodes_per_epoch,
        step_fn=step_fn,
        eval_fn=eval_fn,
        config=spec.loop,
        out=out,
        name="meta",
        meta=meta,
        best_key="val_accuracy",
        resume=resume,
        progress=progress,
        stop_after_steps=stop_after_steps,
    )
