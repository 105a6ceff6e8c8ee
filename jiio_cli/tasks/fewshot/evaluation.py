"""Evaluating a meta-model: held-out episodes, three ways of adapting, and one new task.

Per episode batch, on the same model, episodes and device:

* **jiio** — v* by JIIO on the support objective, queries classified at v* (for a
  transductive model the objective also sees the unlabelled queries, and v* carries
  centroid offsets; see :class:`~jiio_cli.models.MetaConfig`);
* **naive** — v* by Adam with a full forward and adjoint solve per step, run for the
  number of steps whose function evaluations match JIIO's (measured per batch);
* **centroid** — no adaptation: nearest class centroid of the DEQ features at v = 0;
* **protonet** (when a baseline :class:`~jiio_cli.models.ProtoNet` is given) — its nearest
  prototype, on the very same episodes, so JIIO's difference to it is paired;
* **protonet_soft_kmeans** (with a baseline and a transductive model) — the ProtoNet's
  prototypes refined on the same unlabelled queries by soft k-means: the yardstick on
  equal terms.

Episodes are ``across`` (N classes of the whole pool) or ``within`` (N classes of one
alphabet, support and queries by disjoint drawers); see
:data:`~jiio_cli.data.episodes.EPISODE_KINDS`. The report also gives the relative
fixed-point residuals of JIIO's support solves and of the query solves at v*.

Accuracy is the fraction of queries classified right, per episode; the report gives the
mean over episodes and its 95 % confidence interval (1.96 standard errors), with the
support objective, wall-clock time and the f-evaluations / VJPs / iterations per task.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor

from jiio_cli.data.episodes import ClassPool, EpisodeBatch, draw_episodes
from jiio_cli.engine import InputOptResult
from jiio_cli.models import FiLMClassifier, ProtoNet
from jiio_cli.tasks.fewshot.classification import (
    AdaptConfig,
    adapt_context,
    adapt_episodes,
    centroid_predictions,
    classify_episodes,
    query_logits_with_residual,
    task_soft_kmeans_steps,
    task_transductive_weight,
)
from jiio_cli.tasks.fewshot.protonet import protonet_predictions
from jiio_cli.tasks.fewshot.tally import (
    MethodTally,
    matched_naive_settings,
    refuse_divergence,
    residual_summary,
    tally_report,
)
from jiio_cli.tasks.wall_clock import timed
from jiio_cli.training import derived_generator

__all__ = ["adapt_and_predict", "evaluate_episodes"]

METHODS = ("jiio", "naive", "centroid")

PROTONET_SOFT_KMEANS_STEPS = 3
"""Soft k-means steps of the ProtoNet yardstick beside a meta-model whose inner problem
sees the queries (β > 0) but whose read-out takes no soft k-means steps of its own; with
read-out steps the yardstick takes the same number. On the validation characters of the
Omniglot runs (``scripts/omniglot_validation_accuracy.py``) 3 steps gain 5.3 points at
20 ways and 5 steps 0.4 more."""


def sees_queries(model: FiLMClassifier, settings: AdaptConfig) -> bool:
    """Whether the meta-model's predictions use the task's unlabelled queries: a
    transductive inner problem (β > 0) or soft k-means steps in its read-out."""
    return (
        task_transductive_weight(model, settings) > 0 or task_soft_kmeans_steps(model, settings) > 0
    )


def yardstick_soft_kmeans_steps(model: FiLMClassifier, settings: AdaptConfig) -> int:
    """Soft k-means steps of the ProtoNet yardstick: the meta-model's read-out steps, so
    that both refine on the queries alike, else :data:`PROTONET_SOFT_KMEANS_STEPS`."""
    return task_soft_kmeans_steps(model, settings) or PROTONET_SOFT_KMEANS_STEPS


def _adapted_predictions(
    model: FiLMClassifier,
    ep: EpisodeBatch,
    settings: AdaptConfig,
    method: str,
) -> tuple[Tensor, InputOptResult, float, Tensor]:
    """Predicted query labels (B, m), the support solve, the seconds both took and the
    query solves' relative residuals (B,)."""

    def work() -> tuple[Tensor, InputOptResult, Tensor]:
        logits, result, residual = classify_episodes(model, ep, settings, method)  # type: ignore[arg-type]
        refuse_divergence(result, logits, "meta-model")
        return logits.argmax(-1), result, residual

    (predicted, result, residual), seconds = timed(ep.support.device, work)
    return predicted, result, seconds, residual


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
    settings: AdaptConfig,
    seed: int,
    batch: int = 20,
    naive_steps: int | None = None,
    kind: str = "across",
    baseline: ProtoNet | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
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
        kind: ``across`` or ``within`` (one alphabet per episode, disjoint drawers).
        baseline: a Prototypical Network scored on the same episodes (eval mode).
        progress: ``progress(label, done, total)`` (episodes), first and after each batch.
        on_batch: after each batch, the report over the episodes done (built only then).

    Returns:
        ``{"jiio": {...}, "naive": {...}, "centroid": {...}, ["protonet": {...},]
        "paired": {...}, "naive_steps": [...], "residuals": {...}, "readout_tol": tol,
        "readout_unconverged": count}`` with accuracy, ci95, timings and solver counts per
        method, JIIO's paired accuracy differences to the others (mean, ci95), the relative
        residuals of JIIO's support solves (``support_z``, ``support_x``) and of its
        read-out solves at v* (``query_z``), and how many episodes' read-out solve ended
        above the forward solver's tolerance.
    """
    device = next(model.parameters()).device
    # ``across`` keeps the episodes of earlier reports; ``within`` draws its own.
    keys = (11, ways, shots) if kind == "across" else (17, ways, shots)
    generator = derived_generator(seed, *keys)
    methods = _methods(model, settings, baseline)
    tallies = {m: MethodTally("accuracy") for m in methods}
    steps_used: list[int] = []
    residuals: dict[str, list[float]] = {"support_z": [], "support_x": [], "query_z": []}
    label = f"episodes ({kind})"
    if progress is not None:
        progress(label, 0, episodes)
    # Warm-up: neither method pays one-off costs (allocator, first calls) inside the timing.
    warm = draw_episodes(pool, kind, 1, ways, shots, queries, derived_generator(seed, 12))
    _adapted_predictions(model, warm.to(device), settings, "jiio")

    readout = _readout_settings(model, settings, "protonet_soft_kmeans" in tallies)

    def report_over(done: int) -> dict[str, Any]:
        report = tally_report(tallies, methods[1:], steps_used, done)
        report["kind"] = kind
        report.update(readout)
        report["residuals"] = {k: residual_summary(v) for k, v in residuals.items()}
        report["readout_tol"] = settings.forward.tol
        report["readout_unconverged"] = sum(r > settings.forward.tol for r in residuals["query_z"])
        return report

    for begin in range(0, episodes, batch):
        count = min(batch, episodes - begin)
        ep = draw_episodes(pool, kind, count, ways, shots, queries, generator).to(device)
        steps_used.append(
            _score_batch(model, ep, settings, naive_steps, baseline, tallies, residuals)
        )
        if on_batch is not None:
            on_batch(report_over(begin + count))
        if progress is not None:
            progress(label, begin + count, episodes)
    return report_over(episodes)


def _methods(
    model: FiLMClassifier, settings: AdaptConfig, baseline: ProtoNet | None
) -> tuple[str, ...]:
    """The methods a report scores: :data:`METHODS`, and with a baseline the ProtoNet, and
    the ProtoNet refined on the queries beside a meta-model that sees them."""
    if baseline is None:
        return METHODS
    # A transductive meta-model sees the queries: so does this yardstick.
    refined = ("protonet_soft_kmeans",) if sees_queries(model, settings) else ()
    return (*METHODS, "protonet", *refined)


def _readout_settings(
    model: FiLMClassifier, settings: AdaptConfig, refined_yardstick: bool
) -> dict[str, Any]:
    """How the report's predictions used the queries: β, the read-out's soft k-means
    steps, and the refined ProtoNet's steps when it was scored."""
    out: dict[str, Any] = {
        "transductive_weight": task_transductive_weight(model, settings),
        "soft_kmeans_steps": task_soft_kmeans_steps(model, settings),
    }
    if refined_yardstick:
        out["protonet_soft_kmeans_steps"] = yardstick_soft_kmeans_steps(model, settings)
    return out


def _score_batch(
    model: FiLMClassifier,
    ep: EpisodeBatch,
    settings: AdaptConfig,
    naive_steps: int | None,
    baseline: ProtoNet | None,
    tallies: dict[str, MethodTally],
    residuals: dict[str, list[float]],
) -> int:
    """Score every method on one batch of episodes, adding to ``tallies`` and to JIIO's
    ``residuals``; returns the naive loop's Adam steps (matched to JIIO's f-evaluations
    when ``naive_steps`` is None)."""
    device = ep.support.device
    ways = ep.ways
    predicted, result, seconds, query_residual = _adapted_predictions(model, ep, settings, "jiio")
    tallies["jiio"].add(_accuracy(predicted, ep.query_labels), seconds, result)
    residuals["support_z"] += result.residual_z.tolist()
    residuals["support_x"] += result.residual_x.tolist()
    residuals["query_z"] += query_residual.tolist()

    naive_settings, steps = matched_naive_settings(
        settings,
        result,
        partial(adapt_episodes, model, ep, method="naive"),
        naive_steps,
    )
    predicted, result, seconds, _ = _adapted_predictions(model, ep, naive_settings, "naive")
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
            task_soft_kmeans_steps(model, settings),
        ),
    )
    tallies["centroid"].add(_accuracy(predicted, ep.query_labels), seconds, None)
    if baseline is not None:
        predicted, seconds = timed(device, partial(protonet_predictions, baseline, ep))
        tallies["protonet"].add(_accuracy(predicted, ep.query_labels), seconds, None)
    if "protonet_soft_kmeans" in tallies:
        assert baseline is not None
        steps = yardstick_soft_kmeans_steps(model, settings)
        refine = partial(protonet_predictions, baseline, ep, steps)
        predicted, seconds = timed(device, refine)
        tallies["protonet_soft_kmeans"].add(_accuracy(predicted, ep.query_labels), seconds, None)
    return steps


def adapt_and_predict(
    model: FiLMClassifier,
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    ways: int,
    settings: AdaptConfig,
) -> tuple[Tensor, Tensor, InputOptResult, float]:
    """Adapt to one task and classify its queries.

    Args:
        support: (n, c, S, S) images; support_labels: (n,) in 0..N−1; query: (m, c, S, S).

    Returns:
        (predicted labels (m,), class probabilities (m, N), the support solve, the
        relative residual of the read-out solve at v*: the largest over the images whose
        fixed points the predictions come from; converged when ≤ ``settings.forward.tol``).
    """
    result = adapt_context(
        model, support[None], support_labels[None], ways, settings, query=query[None]
    )
    logits, residual = query_logits_with_residual(
        model,
        query[None],
        result.x,
        ways,
        settings.forward,
        support[None],
        support_labels[None],
        task_soft_kmeans_steps(model, settings),
    )
    refuse_divergence(result, logits, "meta-model")
    return logits[0].argmax(-1), logits[0].softmax(-1), result, float(residual[0])
