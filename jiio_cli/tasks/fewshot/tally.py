"""Scoring adaptation methods side by side on the same evaluation tasks.

Shared by the glyph few-shot evaluation (:mod:`jiio_cli.tasks.fewshot.evaluation`, scored by query
accuracy per episode) and the sinusoid one (:mod:`jiio_cli.tasks.fewshot.sinusoid_eval`, scored by
query MSE per task): the running totals of each method, the mean and 95 % interval of a
per-task score, JIIO's paired differences to the other methods, the naive loop's step
budget matched to JIIO's function evaluations and the summary of per-task residuals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from jiio_cli.engine import InputOptResult, NaiveConfig
from jiio_cli.errors import JiioError

__all__ = [
    "MethodTally",
    "NaiveAdaptConfig",
    "matched_naive_settings",
    "matched_naive_steps",
    "mean_and_ci95",
    "paired_difference",
    "refuse_divergence",
    "residual_summary",
    "tally_report",
]

T = TypeVar("T")


def residual_summary(values: list[float]) -> dict[str, float]:
    """Mean, 99th percentile and largest of per-task relative residuals."""
    t = torch.tensor(values, dtype=torch.float64)
    return {
        "mean": float(t.mean()),
        "p99": float(torch.quantile(t, 0.99)),
        "max": float(t.max()),
    }


def refuse_divergence(result: InputOptResult | None, outputs: Tensor, model: str) -> None:
    """Stop with one line when a support solve (``result``, if any) or the query outputs
    (B, …) hold NaN/Inf: a score computed from them is noise, not a measurement.

    ``model`` names the model in the message (``meta-model``, ``sinusoid model``).
    """
    bad = ~torch.isfinite(outputs).flatten(1).all(dim=1)
    if result is not None:
        bad = bad | result.failed
    if bool(bad.any()):
        raise JiioError(
            f"the {model}'s solve diverged: NaN/Inf on {int(bad.sum())} of "
            f"{bad.shape[0]} tasks; the checkpoint is broken or the solve unstable"
        )


def mean_and_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % normal confidence interval (1.96·s/√n)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(variance / n)


def paired_difference(first: list[float], second: list[float]) -> dict[str, float]:
    """Mean per-task score difference of two methods on the same tasks, with the
    half-width of its 95 % interval: the paired comparison, tighter than comparing the two
    methods' own intervals because task difficulty cancels."""
    mean, ci = mean_and_ci95([a - b for a, b in zip(first, second, strict=True)])
    return {"mean": mean, "ci95": ci}


@dataclass
class MethodTally:
    """Running totals of one method over the batches of evaluation tasks.

    Attributes:
        metric: name of the per-task score in the summary (``accuracy``, ``mse``).
        scores: the score of every task so far, in task order (what pairing needs).
        objectives: the support objective at each task's solution (adapting methods).
        seconds: wall-clock time of all batches.
        f_evals, vjps, iterations: the support solves' totals over all tasks.
        tasks: tasks tallied.
    """

    metric: str
    scores: list[float] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    seconds: float = 0.0
    f_evals: float = 0.0
    vjps: float = 0.0
    iterations: float = 0.0
    tasks: int = 0

    def add(self, scores: Tensor, seconds: float, result: InputOptResult | None) -> None:
        """Add a batch: per-task scores (B,), its wall time and its support solve (None
        for a method that does not adapt)."""
        self.scores += scores.tolist()
        self.seconds += seconds
        self.tasks += scores.shape[0]
        if result is not None:
            self.objectives += result.objective.tolist()
            self.f_evals += float(result.f_evals.float().sum())
            self.vjps += float(result.vjps.float().sum())
            self.iterations += float(result.iterations.float().sum())

    def summary(self) -> dict[str, Any]:
        """Mean score (under the metric's name), its 95 % interval half-width, timings and,
        for adapting methods, the mean support objective and solver counts per task."""
        mean, ci = mean_and_ci95(self.scores)
        out: dict[str, Any] = {
            self.metric: mean,
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


def tally_report(
    tallies: Mapping[str, MethodTally],
    compared_to: Iterable[str],
    steps_used: list[int],
    episodes: int,
) -> dict[str, Any]:
    """The evaluation report: each method's summary, then ``paired`` (JIIO's paired
    differences ``jiio_minus_<other>`` to each of ``compared_to``), ``naive_steps`` (the
    distinct step budgets the naive loop ran with) and ``episodes``."""
    report: dict[str, Any] = {m: t.summary() for m, t in tallies.items()}
    report["paired"] = {
        f"jiio_minus_{other}": paired_difference(tallies["jiio"].scores, tallies[other].scores)
        for other in compared_to
    }
    report["naive_steps"] = sorted(set(steps_used))
    report["episodes"] = episodes
    return report


def matched_naive_steps(jiio_f_evals: float, per_step: float, overhead: float) -> int:
    """Adam steps whose f-evaluations (overhead + steps · per_step) best match JIIO's."""
    return max(1, round((jiio_f_evals - overhead) / max(per_step, 1.0)))


class NaiveAdaptConfig(Protocol):
    """Adaptation settings (a dataclass) that carry the naive loop's configuration."""

    @property
    def naive(self) -> NaiveConfig: ...


S = TypeVar("S", bound=NaiveAdaptConfig)


def _with_naive_steps(settings: S, steps: int) -> S:
    """``settings`` with the naive loop run for ``steps`` Adam steps."""
    return dataclasses.replace(  # type: ignore[type-var]
        settings, naive=dataclasses.replace(settings.naive, steps=steps)
    )


def matched_naive_settings(
    settings: S,
    jiio: InputOptResult,
    naive: Callable[[S], InputOptResult],
    steps: int | None,
) -> tuple[S, int]:
    """The naive loop's settings for a batch, and its step count.

    Args:
        settings: the adaptation settings.
        jiio: JIIO's support solve of the batch.
        naive: runs the naive loop on the batch's support sets with the given settings.
        steps: a fixed step count; None matches JIIO's mean f-evaluations on this batch.
    """
    if steps is None:
        # Each Adam step costs one forward solve (from scratch) + 2 evaluations; the
        # final solve is one more step's worth. Measure the forward cost on this batch.
        one = naive(_with_naive_steps(settings, 1))
        per_step = float(one.f_evals.float().mean()) / 2
        steps = matched_naive_steps(float(jiio.f_evals.float().mean()), per_step, per_step)
    return _with_naive_steps(settings, steps), steps
