"""Evaluating a meta-model: held-out episodes, three ways of adapting, and one new task.

Per episode batch, on the same model, episodes and device:

* **jiio** — v* by JIIO on the support objective, queries classified at v*;
* **naive** — v* by Adam with a full forward and adjoint solve per step, run for the
  number of steps whose function evaluations match JIIO's (measured per batch);
* **centroid** — no adaptation: nearest class centroid of the DEQ features at v = 0.

Accuracy is the fraction of queries classified right, per episode; the report gives the
mean over episodes and its 95 % confidence interval (1.96 standard errors), with the
support objective, wall-clock time and the f-evaluations / VJPs / iterations per task.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import Tensor

from jiio_cli.data.episodes import ClassPool, EpisodeBatch, sample_episodes
from jiio_cli.engine import InputOptResult
from jiio_cli.models import FiLMClassifier
from jiio_cli.tasks.fewshot.classification import (
    AdaptSettings,
    adapt_context,
    centroid_predictions,
    query_logits,
)
from jiio_cli.tasks.fewshot.tally import (
    MethodTally,
    matched_naive_settings,
    refuse_divergence,
    tally_report,
)
from jiio_cli.tasks.wall_clock import timed
from jiio_cli.training import derived_generator

__all__ = ["adapt_and_predict", "evaluate_episodes"]

METHODS = ("jiio", "naive", "centroid")


def _adapted_predictions(
    model: FiLMClassifier,
    ep: EpisodeBatch,
    settings: AdaptSettings,
    method: str,
) -> tuple[Tensor, InputOptResult, float]:
    """Predicted query labels (B, m), the support solve and the seconds both took."""

    def work() -> tuple[Tensor, InputOptResult]:
        result = adapt_context(model, ep.support, ep.support_labels, ep.ways, settings, method)  # type: ignore[arg-type]
        logits = query_logits(
            model, ep.query, result.x, ep.ways, settings.forward, ep.support, ep.support_labels
        )
        refuse_divergence(result, logits, "meta-model")
        return logits.argmax(-1), result

    (predicted, result), seconds = timed(ep.support.device, work)
    return predicted, result, seconds


def _accuracy(predicted: Tensor, labels: Tensor) -> Tensor:
    """Per-episode fraction of queries classified right (B,), from labels (B, m)."""
    return (predicted == labels).float().mean(dim=1)


def evaluate_episodes(
    model: FiLMClassifier,
    pool: ClassPool,
    *,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    settings: AdaptSettings,
    seed: int,
    batch: int = 20,
    naive_steps: int | None = None,
) -> dict[str, Any]:
    """JIIO, the naive loop and the centroid baseline on the same held-out episodes.

    Args:
        model: the meta-model (eval mode).
        pool: the held-out classes.
        ways, shots, queries: N, K and Q of the episodes.
        episodes: how many tasks.
        settings: the adaptation settings (JIIO budget, Adam's learning rate).
        seed: seed of the episodes.
        batch: tasks solved together.
        naive_steps: Adam steps; None matches JIIO's f-evaluations batch by batch.

    Returns:
        ``{"jiio": {...}, "naive": {...}, "centroid": {...}, "paired": {...},
        "naive_steps": [...]}`` with accuracy, ci95, timings and solver counts per method,
        and JIIO's paired accuracy differences to the other two (mean, ci95).
    """
    device = next(model.parameters()).device
    generator = derived_generator(seed, 11, ways, shots)
    tallies = {m: MethodTally("accuracy") for m in METHODS}
    steps_used: list[int] = []
    # Warm-up: neither method pays one-off costs (allocator, first calls) inside the timing.
    warm = sample_episodes(pool, 1, ways, shots, queries, derived_generator(seed, 12)).to(device)
    _adapted_predictions(model, warm, settings, "jiio")
    for begin in range(0, episodes, batch):
        count = min(batch, episodes - begin)
        ep = sample_episodes(pool, count, ways, shots, queries, generator).to(device)
        predicted, result, seconds = _adapted_predictions(model, ep, settings, "jiio")
        tallies["jiio"].add(_accuracy(predicted, ep.query_labels), seconds, result)

        naive_settings, steps = matched_naive_settings(
            settings,
            result,
            partial(adapt_context, model, ep.support, ep.support_labels, ways, method="naive"),
            naive_steps,
        )
        steps_used.append(steps)
        predicted, result, seconds = _adapted_predictions(model, ep, naive_settings, "naive")
        tallies["naive"].add(_accuracy(predicted, ep.query_labels), seconds, result)

        predicted, seconds = timed(
            device,
            partial(
                centroid_predictions,
                model,
                ep.support,
                ep.support_labels,
                ep.query,
                ways,
                settings.forward,
            ),
        )
        tallies["centroid"].add(_accuracy(predicted, ep.query_labels), seconds, None)
    return tally_report(tallies, ("centroid", "naive"), steps_used, episodes)


def adapt_and_predict(
    model: FiLMClassifier,
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    ways: int,
    settings: AdaptSettings,
) -> tuple[Tensor, Tensor, InputOptResult]:
    """Adapt to one task and classify its queries.

    Args:
        support: (n, c, S, S) images; support_labels: (n,) in 0..N−1; query: (m, c, S, S).

    Returns:
        (predicted labels (m,), class probabilities (m, N), the support solve).
    """
    result = adapt_context(model, support[None], support_labels[None], ways, settings)
    logits = query_logits(
        model, query[None], result.x, ways, settings.forward, support[None], support_labels[None]
    )[0]
    refuse_divergence(result, logits, "meta-model")
    return logits.argmax(-1), logits.softmax(-1), result
