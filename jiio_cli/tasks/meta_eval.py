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

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from jiio_cli.data.episodes import ClassPool, EpisodeBatch, sample_episodes
from jiio_cli.engine import InputOptResult
from jiio_cli.errors import JiioError
from jiio_cli.models import FiLMClassifier
from jiio_cli.tasks.meta import AdaptSettings, adapt_context, centroid_predictions, query_logits
from jiio_cli.training import derived_generator

__all__ = [
    "MethodTally",
    "adapt_and_predict",
    "evaluate_episodes",
    "matched_naive_steps",
    "mean_and_ci95",
    "paired_difference",
]

METHODS = ("jiio", "naive", "centroid")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_and_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % normal confidence interval (1.96·s/√n)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(variance / n)


def paired_difference(first: list[float], second: list[float]) -> dict[str, float]:
    """Mean per-episode accuracy difference of two methods on the same episodes, with the
    half-width of its 95 % interval: the paired comparison, tighter than comparing the two
    methods' own intervals because episode difficulty cancels."""
    mean, ci = mean_and_ci95([a - b for a, b in zip(first, second, strict=True)])
    return {"mean": mean, "ci95": ci}


@dataclass
class MethodTally:
    """Running totals of one method over the episode batches."""

    accuracies: list[float] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    seconds: float = 0.0
    f_evals: float = 0.0
    vjps: float = 0.0
    iterations: float = 0.0
    tasks: int = 0

    def add(self, correct: Tensor, seconds: float, result: InputOptResult | None) -> None:
        self.accuracies += correct.float().mean(dim=1).tolist()
        self.seconds += seconds
        self.tasks += correct.shape[0]
        if result is not None:
            self.objectives += result.objective.tolist()
            self.f_evals += float(result.f_evals.float().sum())
            self.vjps += float(result.vjps.float().sum())
            self.iterations += float(result.iterations.float().sum())

    def summary(self) -> dict[str, Any]:
        mean, ci = mean_and_ci95(self.accuracies)
        out: dict[str, Any] = {
            "accuracy": mean,
            "ci95": ci,
            "seconds": self.seconds,
            "seconds_per_task": self.seconds / max(self.tasks, 1),
        }
        if self.objectives:
            out["support_objective"] = sum(self.objectives) / len(self.objectives)
            out["f_evals_per_task"] = self.f_evals / self.tasks
            out["vjps_per_task"] = self.vjps / self.tasks
            out["iterations_per_task"] = self.iterations / self.tasks
        return out


def matched_naive_steps(jiio_f_evals: float, per_step: float, overhead: float) -> int:
    """Adam steps whose f-evaluations (overhead + steps · per_step) best match JIIO's."""
    return max(1, round((jiio_f_evals - overhead) / max(per_step, 1.0)))


def refuse_divergence(result: InputOptResult, logits: Tensor) -> None:
    """Stop with one line when an adaptation or a query solve produced NaN/Inf: accuracy
    from such a model is noise, not a measurement."""
    bad = result.failed | ~torch.isfinite(logits).flatten(1).all(dim=1)
    if bool(bad.any()):
        raise JiioError(
            f"the meta-model's solve diverged: NaN/Inf on {int(bad.sum())} of "
            f"{bad.shape[0]} tasks; the checkpoint is broken or the solve unstable"
        )


def _adapted_predictions(
    model: FiLMClassifier,
    ep: EpisodeBatch,
    settings: AdaptSettings,
    method: str,
) -> tuple[Tensor, InputOptResult, float]:
    device = ep.support.device
    _synchronize(device)
    start = time.perf_counter()
    result = adapt_context(model, ep.support, ep.support_labels, ep.ways, settings, method)  # type: ignore[arg-type]
    logits = query_logits(model, ep.query, result.x, ep.ways, settings.forward)
    refuse_divergence(result, logits)
    predicted = logits.argmax(-1)
    _synchronize(device)
    return predicted, result, time.perf_counter() - start


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
    tallies = {m: MethodTally() for m in METHODS}
    steps_used: list[int] = []
    # Warm-up: neither method pays one-off costs (allocator, first calls) inside the timing.
    warm = sample_episodes(pool, 1, ways, shots, queries, derived_generator(seed, 12)).to(device)
    _adapted_predictions(model, warm, settings, "jiio")
    for begin in range(0, episodes, batch):
        count = min(batch, episodes - begin)
        ep = sample_episodes(pool, count, ways, shots, queries, generator).to(device)
        predicted, result, seconds = _adapted_predictions(model, ep, settings, "jiio")
        tallies["jiio"].add(predicted == ep.query_labels, seconds, result)

        steps = naive_steps
        if steps is None:
            # Each Adam step costs one forward solve (from scratch) + 3 evaluations; the
            # final solve is one more step's worth. Measure the forward cost on this batch.
            probe = dataclasses.replace(
                settings, naive=dataclasses.replace(settings.naive, steps=1)
            )
            one = adapt_context(model, ep.support, ep.support_labels, ways, probe, "naive")
            per_step = float(one.f_evals.float().mean()) / 2
            steps = matched_naive_steps(float(result.f_evals.float().mean()), per_step, per_step)
        steps_used.append(steps)
        naive_settings = dataclasses.replace(
            settings, naive=dataclasses.replace(settings.naive, steps=steps)
        )
        predicted, result, seconds = _adapted_predictions(model, ep, naive_settings, "naive")
        tallies["naive"].add(predicted == ep.query_labels, seconds, result)

        _synchronize(device)
        start = time.perf_counter()
        predicted = centroid_predictions(
            model, ep.support, ep.support_labels, ep.query, ways, settings.forward
        )
        _synchronize(device)
        tallies["centroid"].add(predicted == ep.query_labels, time.perf_counter() - start, None)
    report: dict[str, Any] = {m: t.summary() for m, t in tallies.items()}
    report["paired"] = {
        f"jiio_minus_{other}": paired_difference(
            tallies["jiio"].accuracies, tallies[other].accuracies
        )
        for other in ("centroid", "naive")
    }
    report["naive_steps"] = sorted(set(steps_used))
    report["episodes"] = episodes
    return report


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
    logits = query_logits(model, query[None], result.x, ways, settings.forward)[0]
    refuse_divergence(result, logits)
    return logits.argmax(-1), logits.softmax(-1), result
