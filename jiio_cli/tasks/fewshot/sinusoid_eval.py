"""Evaluating a sinusoid meta-model on fresh tasks: three ways of adapting the context.

Per batch of tasks, on the same model, tasks and device:

* **jiio** — v* by JIIO on the support objective, queries predicted at v*;
* **naive** — v* by Adam with a full forward and adjoint solve per step, run for the
  number of steps whose function evaluations match JIIO's (measured per batch);
* **no adaptation** — v = 0 for every task: what the meta-learned model predicts
  before it has seen the support set.

The score is the query MSE per task; the report gives the mean over tasks and its 95 %
confidence interval (1.96 standard errors), with the support objective, wall-clock time
and the f-evaluations / VJPs / iterations per task, JIIO's paired per-task
differences to the other two methods (task difficulty cancels in them), and the relative
residuals of JIIO's read-out solves at v* (how many ended above the solver's tolerance).

The tasks come from the stream (seed, 13, K): the training loop draws its tasks from
(seed, 2, step) and validation from a fixed seed of its own, so evaluation never sees a
task used for training or model selection (the task space is continuous anyway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from jiio_cli.data.sinusoid import SinusoidBatch, sample_sinusoid_tasks
from jiio_cli.engine import InputOptResult
from jiio_cli.models import FiLMRegressor
from jiio_cli.tasks.fewshot.context_solve import solve_at_contexts
from jiio_cli.tasks.fewshot.sinusoid import RegressionAdaptConfig, adapt_context, predictions
from jiio_cli.tasks.fewshot.tally import (
    MethodTally,
    matched_naive_settings,
    refuse_divergence,
    residual_summary,
    tally_report,
)
from jiio_cli.tasks.wall_clock import timed
from jiio_cli.training import derived_generator

__all__ = ["METHODS", "evaluate_tasks", "evaluation_tasks"]

METHODS = ("jiio", "naive", "no_adaptation")
EVAL_STREAM = 13


def evaluation_tasks(seed: int, shots: int) -> torch.Generator:
    """The generator of the evaluation tasks for a seed and K (see the module docstring)."""
    return derived_generator(seed, EVAL_STREAM, shots)


def _query_mse(predicted: Tensor, target: Tensor) -> Tensor:
    """Per-task query MSE (B,) of predictions and targets (B, Q, O)."""
    return (predicted - target).pow(2).flatten(1).mean(dim=1)


def _adapted(
    model: FiLMRegressor, tasks: SinusoidBatch, settings: RegressionAdaptConfig, method: str
) -> tuple[Tensor, InputOptResult, float, Tensor]:
    """Per-task query MSE (B,), the support solve, the seconds both took and the relative
    residual (B,) of each task's read-out solve at v* (the largest over its entries)."""

    def work() -> tuple[Tensor, InputOptResult, Tensor]:
        result = adapt_context(model, tasks.support_t, tasks.support_y, settings, method)  # type: ignore[arg-type]
        solution = solve_at_contexts(model, tasks.query_t, result.x, settings.forward)
        with torch.no_grad():
            predicted = model.predict(solution.z, result.x)
        return predicted, result, solution.stats.residual.amax(dim=1)

    (predicted, result, residual), seconds = timed(tasks.support_t.device, work)
    refuse_divergence(result, predicted, "sinusoid model")
    return _query_mse(predicted, tasks.query_y), result, seconds, residual


def _to(tasks: SinusoidBatch, device: torch.device) -> SinusoidBatch:
    return SinusoidBatch(*(getattr(tasks, f.name).to(device) for f in dataclasses.fields(tasks)))


def evaluate_tasks(
    model: FiLMRegressor,
    *,
    shots: int,
    queries: int,
    episodes: int,
    settings: RegressionAdaptConfig,
    seed: int,
    batch: int = 100,
    naive_steps: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """JIIO, the naive loop and no adaptation on the same fresh sinusoid tasks.

    Args:
        model: the meta-model (eval mode).
        shots, queries: K support and Q query points per task.
        episodes: how many tasks.
        settings: the adaptation settings (JIIO budget, Adam's learning rate).
        seed: seed of the tasks.
        batch: tasks solved together.
        naive_steps: Adam steps; None matches JIIO's f-evaluations batch by batch.
        progress: ``progress(label, done, total)`` (tasks), first and after each batch.
        on_batch: after each batch, the report over the tasks done (built only then).

    Returns:
        ``{"jiio": {...}, "naive": {...}, "no_adaptation": {...}, "paired": {...},
        "naive_steps": [...], "episodes": N, "residuals": {"query_z": {...}},
        "readout_tol": tol, "readout_unconverged": count}`` with mse, ci95, timings and
        solver counts per method, JIIO's paired per-task MSE differences to the other two
        (mean, ci95; negative: JIIO better), and the relative residuals of JIIO's read-out
        solves (mean, p99, max) with how many tasks' ended above the tolerance.
    """
    device = next(model.parameters()).device
    generator = evaluation_tasks(seed, shots)
    tallies = {m: MethodTally("mse") for m in METHODS}
    steps_used: list[int] = []
    readout: list[float] = []
    if progress is not None:
        progress("sinusoid tasks", 0, episodes)

    def report_over(done: int) -> dict[str, Any]:
        report = tally_report(tallies, ("no_adaptation", "naive"), steps_used, done)
        report["residuals"] = {"query_z": residual_summary(readout)}
        report["readout_tol"] = settings.forward.tol
        report["readout_unconverged"] = sum(r > settings.forward.tol for r in readout)
        return report

    # Warm-up: no method pays one-off costs (allocator, first calls) inside the timing.
    warm = sample_sinusoid_tasks(1, shots, queries, derived_generator(seed, EVAL_STREAM + 1))
    _adapted(model, _to(warm, device), settings, "jiio")
    for begin in range(0, episodes, batch):
        count = min(batch, episodes - begin)
        tasks = _to(sample_sinusoid_tasks(count, shots, queries, generator), device)
        mse, result, seconds, residual = _adapted(model, tasks, settings, "jiio")
        tallies["jiio"].add(mse, seconds, result)
        readout += residual.tolist()

        naive_settings, steps = matched_naive_settings(
            settings,
            result,
            partial(adapt_context, model, tasks.support_t, tasks.support_y, method="naive"),
            naive_steps,
        )
        steps_used.append(steps)
        mse, result, seconds, _ = _adapted(model, tasks, naive_settings, "naive")
        tallies["naive"].add(mse, seconds, result)

        zero = tasks.support_t.new_zeros(count, model.context_size)
        predicted, seconds = timed(
            device, partial(predictions, model, tasks.query_t, zero, settings.forward)
        )
        refuse_divergence(None, predicted, "sinusoid model")
        tallies["no_adaptation"].add(_query_mse(predicted, tasks.query_y), seconds, None)
        if on_batch is not None:
            on_batch(report_over(begin + count))
        if progress is not None:
            progress("sinusoid tasks", begin + count, episodes)
    return report_over(episodes)
