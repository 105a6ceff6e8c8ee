"""``jiio bench --task adapt``: JIIO against the naive inner loop on few-shot adaptation.

Kept apart from :mod:`jiio_cli.cli.commands.bench` so that the task's wiring and table
read in one place; ``bench`` parses the shared options and calls :func:`run_adapt_bench`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import typer

from jiio_cli.cli.commands.bench_summary import echo_speed_summary
from jiio_cli.cli.output import emit, print_table
from jiio_cli.cli.progress import progress_display
from jiio_cli.config import CommonConfig

__all__ = ["run_adapt_bench"]


def _held_out_pool(model: Any, spec: Any, data: list[Path] | None) -> tuple[Any, str]:
    """The held-out classes to bench on, and their description (see run_adapt_bench)."""
    from jiio_cli.data.episodes import load_glyph_pool, load_omniglot_folder
    from jiio_cli.data.omniglot import HELD_OUT_ALPHABETS
    from jiio_cli.errors import UsageError

    size = model.config.image_size
    sources = data or [Path(p) for p in (spec.data or ())]
    if not sources:
        return load_glyph_pool("test").resized(size), "the glyph meta-test alphabets"
    missing = [p for p in sources if not p.exists()]
    if missing and not data:
        # The Omniglot archives are not part of the project: bench on the shipped glyphs.
        typer.echo(
            f"note: the model's training data {missing[0]} is not here (give --data); "
            "benching on the glyph meta-test alphabets",
            err=True,
        )
        return load_glyph_pool("test").resized(size), "the glyph meta-test alphabets"
    if missing:
        raise UsageError(f"--data {missing[0]} does not exist")
    pool = load_omniglot_folder(sources, size, model.config.preprocess)
    held = [c for c, a in enumerate(pool.alphabets) if a in HELD_OUT_ALPHABETS]
    if not held:
        raise UsageError(f"{sources[0]} holds none of the held-out alphabets")
    names = ", ".join(str(p) for p in sources)
    return pool.select(held), f"held-out alphabets of {names}"


def run_adapt_bench(
    checkpoint: Path | None,
    tasks: int,
    naive_steps: int,
    ways: int,
    common: CommonConfig,
    repeat: int = 1,
    graph: bool = False,
    *,
    memory: int | None = None,
    alpha_x: float | None = None,
    x_weight: float | None = None,
    film_scale: float | None = None,
    solve_iters: int | None = None,
    plot: Path | None = None,
    data: list[Path] | None = None,
    transductive_weight: float | None = None,
) -> None:
    """Time to equal support objective on ``tasks`` held-out episodes (1 shot): the
    glyph meta-test alphabets, or for a model trained on Omniglot the held-out alphabets
    of ``data`` (default: the sources recorded in the checkpoint, when present).

    ``memory``, ``alpha_x``, ``x_weight`` and ``film_scale`` override JIIO's defaults,
    ``solve_iters`` the cap of the naive method's solves and of JIIO's refinement
    (:class:`AdaptBenchConfig`); ``transductive_weight`` the model's β (its inner problem
    then sees the episodes' queries). ``plot``: also draw the mean support objective against
    time for both methods (PNG).
    """
    from jiio_cli.bench.adapt import AdaptBenchConfig
    from jiio_cli.data.episodes import check_episode_shape, draw_episodes
    from jiio_cli.errors import UsageError
    from jiio_cli.tasks.fewshot.classification import task_transductive_weight
    from jiio_cli.tasks.fewshot.loading import load_meta_model
    from jiio_cli.training import derived_generator

    dev = common.torch_device
    model, path, spec = load_meta_model(checkpoint, dev)
    if ways > model.config.ways:
        raise UsageError(f"--ways {ways}: the model {path} serves at most {model.config.ways}")
    pool, source = _held_out_pool(model, spec, data)
    check_episode_shape(pool, ways, 1, 5, source)
    episodes = draw_episodes(
        pool, "across", tasks, ways, 1, 5, derived_generator(common.seed, 13)
    ).to(dev)
    cfg = _bench_config(
        AdaptBenchConfig(naive_steps=naive_steps, repeat=repeat, graph=graph),
        memory=memory,
        alpha_x=alpha_x,
        x_weight=x_weight,
        film_scale=film_scale,
        solve_iters=solve_iters,
    )
    settings = _adapt_settings(model, path, spec, transductive_weight)
    speed = _measure(model, episodes, settings, cfg, common.json_output)
    if plot is not None:
        _plot_speed(plot, speed, f"adapt, {tasks} tasks, {ways}-way 1-shot")
    result: dict[str, Any] = {
        "task": "adapt",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "checkpoint": str(path),
        "episodes": source,
        "seed": common.seed,
        **_jiio_settings(cfg),
        "transductive_weight": task_transductive_weight(model, settings),
        "speed": speed,
    }
    if common.json_output:
        emit(result, json_output=True)
        return
    print_table(
        _speed_rows(speed, naive_steps),
        title=f"jiio bench --task adapt ({tasks} tasks, {ways}-way 1-shot, "
        f"{result['device_name']})",
        caption=f"JIIO: α_x {cfg.alpha_x:g}, memory {cfg.memory}, x weight {cfg.x_weight:g}, "
        f"film scale {cfg.film_scale:g}",
    )
    echo_speed_summary(speed)


def _adapt_settings(model: Any, path: Path, spec: Any, transductive_weight: float | None) -> Any:
    """The model's adaptation settings with ``--transductive-weight`` (None: its own β)."""
    from jiio_cli.tasks.fewshot.loading import checked_query_settings
    from jiio_cli.tasks.fewshot.training import adapt_settings

    settings = dataclasses.replace(adapt_settings(spec), transductive_weight=transductive_weight)
    return checked_query_settings(model, path, settings)


def _jiio_settings(cfg: Any) -> dict[str, Any]:
    """The bench's JIIO settings, as its JSON reports them."""
    return {
        "jiio_alpha_x": cfg.alpha_x,
        "jiio_memory": cfg.memory,
        "jiio_x_weight": cfg.x_weight,
        "jiio_film_scale": cfg.film_scale,
    }


def _bench_config(
    cfg: Any,
    *,
    memory: int | None,
    alpha_x: float | None,
    x_weight: float | None,
    film_scale: float | None,
    solve_iters: int | None,
) -> Any:
    """``cfg`` (an :class:`AdaptBenchConfig`) with the options the user gave in place of its
    defaults; ``solve_iters`` (None: the model's cap) always replaces the solves' cap."""
    return dataclasses.replace(
        cfg,
        memory=cfg.memory if memory is None else memory,
        alpha_x=cfg.alpha_x if alpha_x is None else alpha_x,
        x_weight=cfg.x_weight if x_weight is None else x_weight,
        film_scale=cfg.film_scale if film_scale is None else film_scale,
        inner_max_iter=solve_iters,
    )


def _measure(
    model: Any, episodes: Any, settings: Any, cfg: Any, json_output: bool
) -> dict[str, Any]:
    """Both methods' speed report under a progress display; on Ctrl-C, the rows measured
    so far are reported before the interrupt goes on to the boundary (which exits 130)."""
    from jiio_cli.bench.adapt import time_to_equal_support_objective

    finished: list[dict[str, Any]] = []
    try:
        with progress_display() as display:
            return time_to_equal_support_objective(
                model, episodes, settings, cfg, progress=display.update, on_row=finished.append
            )
    except KeyboardInterrupt:
        if json_output:
            emit({"task": "adapt", "complete": False, "rows": finished}, json_output=True)
        elif finished:
            print_table(finished, title="jiio bench --task adapt, interrupted")
        raise


def _plot_speed(plot: Path, speed: dict[str, Any], title: str) -> None:
    """The mean support objective against time for both methods (PNG)."""
    from jiio_cli.plot import write_line_plot

    write_line_plot(
        plot,
        {
            "naive (Adam)": [(p["seconds"], p["objective"]) for p in speed["naive"]["trace"]],
            "JIIO": [(r["seconds"], r["support_objective"]) for r in speed["jiio"]["runs"]],
        },
        xlabel="seconds",
        ylabel="mean support objective",
        title=title,
    )


def _speed_row(method: str, seconds: float, run: dict[str, Any]) -> dict[str, Any]:
    """One method's row of the table from its part of the speed report."""
    return {
        "method": method,
        "seconds": seconds,
        "support objective": run["support_objective"],
        "query acc": run["query_accuracy"],
        "f-evals/task": run["f_evals_per_task"],
        "VJPs/task": run["vjps_per_task"],
        "iterations": run["iterations_per_task"],
    }


def _speed_rows(speed: dict[str, Any], naive_steps: int) -> list[dict[str, Any]]:
    """The table: the naive run at its time to target, then each JIIO budget's run."""
    naive = speed["naive"]
    rows = [
        _speed_row(
            f"naive (Adam, {naive_steps} steps, solves from scratch)",
            naive["seconds_to_target"],
            naive,
        )
    ]
    for run in speed["jiio"]["runs"]:
        rows.append(_speed_row(f"jiio, {run['iterations']} iterations", run["seconds"], run))
    return rows
