"""JIIO against the naive inner loop on few-shot adaptation: time to equal support objective.

On one batch of held-out episodes and one meta-model, in one process and on one device:

* the naive method (Adam on the context v, every step a forward and adjoint solve from
  scratch, to tolerance 10⁻⁴ within the model's cap of 30 iterations or
  ``inner_max_iter``) runs ``naive_steps`` steps; its objective trace is that of its
  solved points, and since its steps cost the same, step k ends at (k+1)/(steps+1) of
  its time. The share of its solves that reached the tolerance is reported: on the
  shipped meta-model's slowly converging DEQ few do within 30 iterations, so these are
  truncated solves (BENCHMARKS.md measures a cap of 100 too);
* JIIO is run from scratch with doubling iteration budgets, then bisected between the
  last budget that missed the target and the first that reached it
  (:mod:`jiio_cli.bench.budget_search`); each run's objective is measured at its
  returned, refined point.

The ratio is the naive method's time to reach its own final mean support objective over
the time of the smallest JIIO budget that reaches it. Both methods' query accuracy at their
final contexts, f-evaluations, VJPs and iterations are reported alongside.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jiio_cli.bench.budget_search import jiio_time_to_target
from jiio_cli.bench.timing import timed_median
from jiio_cli.data.episodes import EpisodeBatch
from jiio_cli.engine import InputOptResult, SolverConfig, inner_solves_converged
from jiio_cli.models import FiLMClassifier
from jiio_cli.tasks.fewshot.classification import (
    AdaptConfig,
    adapt_episodes,
    context_scale,
    query_logits,
)
from jiio_cli.tasks.fewshot.tally import refuse_divergence

__all__ = [
    "AdaptBenchConfig",
    "jiio_bench_settings",
    "naive_bench_settings",
    "time_to_equal_support_objective",
]


@dataclass(frozen=True)
class AdaptBenchConfig:
    """Settings of the adaptation benchmark.

    α_x is constant. On the default meta-model (``meta-glyphs-affine``) α_x = 2 reaches
    the naive loop's objective in fewer iterations than 1 on each of three batches, and
    on one of them 3 lost ground as its budget grew; on the earlier default
    (``meta-glyphs``) 1 was ahead of 2. BENCHMARKS.md has the side-by-side runs.
    ``film_scale`` 0.5 (JIIO's steps on the FiLM code a quarter as large, the code
    counted twice as much in Anderson's least squares) needed, on ``meta-glyphs``, a
    median of 150 iterations against 260 without it over seven batches of 32 tasks,
    fewer on six of them (BENCHMARKS.md, "A preconditioner for the context").

    ``inner_max_iter`` caps every forward and adjoint solve of the naive method and
    JIIO's final refinement (None: the model's own cap, 30).
    """

    naive_steps: int = 50
    naive_lr: float = 0.1
    inner_max_iter: int | None = None
    jiio_budgets: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640)
    memory: int = 10
    alpha_x: float = 2.0
    x_weight: float = 30.0
    film_scale: float = 0.5
    repeat: int = 1
    graph: bool = False
    refine: int = 3


def _capped(solver: SolverConfig, cap: int | None) -> SolverConfig:
    return solver if cap is None else dataclasses.replace(solver, max_iter=cap)


def naive_bench_settings(settings: AdaptConfig, cfg: AdaptBenchConfig) -> AdaptConfig:
    """The model's adaptation settings with the bench's naive loop (steps, learning rate,
    cap of its solves)."""
    naive = dataclasses.replace(
        settings.naive,
        steps=cfg.naive_steps,
        lr=cfg.naive_lr,
        forward=_capped(settings.naive.forward, cfg.inner_max_iter),
        adjoint=_capped(settings.naive.adjoint, cfg.inner_max_iter),
    )
    return dataclasses.replace(settings, naive=naive)


def jiio_bench_settings(
    model: FiLMClassifier, settings: AdaptConfig, cfg: AdaptBenchConfig, budget: int
) -> AdaptConfig:
    """The model's adaptation settings with the bench's JIIO (budget, memory, α_x, x weight,
    the context's preconditioner and the cap of its final refinement)."""
    solver = dataclasses.replace(
        settings.jiio.solver, max_iter=budget, memory=cfg.memory, graph=cfg.graph
    )
    jiio = dataclasses.replace(
        settings.jiio,
        solver=solver,
        alpha_x=cfg.alpha_x,
        x_weight=cfg.x_weight,
        x_scale=context_scale(model, cfg.film_scale),
        refine=_capped(settings.jiio.refine, cfg.inner_max_iter),
    )
    return dataclasses.replace(settings, jiio=jiio)


def _timed(
    model: FiLMClassifier,
    ep: EpisodeBatch,
    settings: AdaptConfig,
    method: str,
    repeat: int = 1,
) -> tuple[InputOptResult, float]:
    return timed_median(
        lambda: adapt_episodes(model, ep, settings, method),  # type: ignore[arg-type]
        ep.support.device,
        repeat,
    )


def _accuracy(
    model: FiLMClassifier, ep: EpisodeBatch, result: InputOptResult, solver: SolverConfig
) -> float:
    logits = query_logits(model, ep.query, result.x, ep.ways, solver, ep.support, ep.support_labels)
    refuse_divergence(result, logits, "meta-model")
    return float((logits.argmax(-1) == ep.query_labels).float().mean())


def _counts(result: InputOptResult) -> dict[str, float]:
    return {
        "f_evals_per_task": float(result.f_evals.float().mean()),
        "vjps_per_task": float(result.vjps.float().mean()),
        "iterations_per_task": float(result.iterations.float().mean()),
        "batch_f_evals": int(result.batch_f_evals),
    }


def _warm_up(
    model: FiLMClassifier, ep: EpisodeBatch, settings: AdaptConfig, jiio: AdaptConfig
) -> None:
    """One task through each method so that neither pays one-off costs (allocator, first
    calls) inside its timed run."""
    small = EpisodeBatch(
        ep.support[:1], ep.support_labels[:1], ep.query[:1], ep.query_labels[:1], ep.ways
    )
    _timed(model, small, jiio, "jiio")
    _timed(
        model,
        small,
        dataclasses.replace(settings, naive=dataclasses.replace(settings.naive, steps=1)),
        "naive",
    )


def _naive_report(
    model: FiLMClassifier, ep: EpisodeBatch, settings: AdaptConfig, cfg: AdaptBenchConfig
) -> dict[str, Any]:
    """The naive method's timed run: its final mean support objective (the target JIIO must
    reach), the time its trace first reaches it, and its row of the report.

    Its steps cost the same, so step k of ``steps + 1`` solved points ends at
    (k + 1)/(steps + 1) of the run's time.
    """
    naive_settings = naive_bench_settings(settings, cfg)
    solve = naive_settings.naive.forward
    naive, naive_seconds = _timed(model, ep, naive_settings, "naive", cfg.repeat)
    trace = naive.trace.cpu().tolist()
    times = [naive_seconds * (k + 1) / len(trace) for k in range(len(trace))]
    target = float(naive.objective.mean())
    # A diverged run is refused here, before its (NaN) target is looked for in the trace.
    accuracy = _accuracy(model, ep, naive, settings.forward)
    # The trace is the mean objective at each step's solved point; its last entry is the
    # final objective, so the target is always reached.
    naive_reach = next(t for t, v in zip(times, trace, strict=True) if v <= target + 1e-12)
    return {
        "method": f"adam (lr {cfg.naive_lr:g}), {cfg.naive_steps} steps, forward and "
        f"adjoint solves from scratch to tolerance {solve.tol:g} within "
        f"{solve.max_iter} iterations",
        "inner_tol": solve.tol,
        "inner_max_iter": solve.max_iter,
        "seconds": naive_seconds,
        "seconds_to_target": naive_reach,
        "support_objective": target,
        "query_accuracy": accuracy,
        "inner_solves_converged": inner_solves_converged(naive),
        **_counts(naive),
        "trace": [{"seconds": t, "objective": v} for t, v in zip(times, trace, strict=True)],
    }


def time_to_equal_support_objective(
    model: FiLMClassifier,
    ep: EpisodeBatch,
    settings: AdaptConfig,
    cfg: AdaptBenchConfig,
    progress: Callable[[str, int, int], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Objective-versus-time of both methods on one batch of tasks, and the speed ratio.

    ``progress(label, done, total)`` hears each phase (the naive run, then at most
    ``len(cfg.jiio_budgets) + cfg.refine`` JIIO budgets); ``on_row(row)`` gets each
    method's row as soon as it is measured.
    """
    report = progress if progress is not None else (lambda _label, _done, _total: None)

    def jiio_settings(budget: int) -> AdaptConfig:
        return jiio_bench_settings(model, settings, cfg, budget)

    _warm_up(model, ep, settings, jiio_settings(3))
    report("naive (Adam)", 0, 1)
    naive = _naive_report(model, ep, settings, cfg)
    target, naive_reach = naive["support_objective"], naive["seconds_to_target"]
    report("naive (Adam)", 1, 1)
    if on_row is not None:
        on_row({"method": "naive (Adam)", "seconds": naive_reach, "support_objective": target})

    def jiio_run(budget: int) -> dict[str, Any]:
        result, seconds = _timed(model, ep, jiio_settings(budget), "jiio", cfg.repeat)
        return {
            "iterations": budget,
            "seconds": seconds,
            "support_objective": float(result.objective.mean()),
            "query_accuracy": _accuracy(model, ep, result, settings.forward),
            "converged": float(result.converged.float().mean()),
            "cuda_graph": result.graph,
            **_counts(result),
        }

    jiio = jiio_time_to_target(
        jiio_run, "support_objective", target, cfg.jiio_budgets, cfg.refine, report, on_row
    )
    jiio_reach = jiio["seconds_to_target"]
    return {
        "tasks": ep.support.shape[0],
        "ways": ep.ways,
        "target_support_objective": target,
        "naive": naive,
        "jiio": jiio,
        "ratio": (naive_reach / jiio_reach) if jiio_reach else None,
    }
