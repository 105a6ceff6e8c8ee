"""``jiio bench --task reconstruct``: time to equal objective and the quality table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from jiio_cli.cli.commands.bench_summary import echo_speed_summary
from jiio_cli.cli.options import CommonConfig
from jiio_cli.cli.output import emit, print_table
from jiio_cli.cli.progress import progress_display

__all__ = ["run_reconstruct_bench"]


def run_reconstruct_bench(
    checkpoint: Path | None,
    corruption: str,
    opts: Any,
    quality: bool,
    plot: Path | None,
    graph: bool,
    common: CommonConfig,
) -> None:
    """JIIO against the naive method on one held-out batch; with ``quality`` the PSNR table.

    ``opts`` are the validated numeric options of ``jiio bench`` (``BenchCommandConfig``).
    """
    from jiio_cli.bench.reconstruct import speed_batch, time_to_equal_objective
    from jiio_cli.tasks.loading import default_checkpoint, load_decoder

    dev = common.torch_device
    path = checkpoint if checkpoint is not None else default_checkpoint("decoder")
    decoder, ckpt = load_decoder(path, dev)
    cfg = _bench_config(ckpt, opts, graph)
    _, observed, known = speed_batch(opts.batch_size, corruption, common.seed)
    observed, known = observed.to(dev), known.to(dev)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    title = f"jiio bench --task reconstruct ({corruption}, batch {opts.batch_size}, {device_name})"
    finished: list[dict[str, Any]] = []
    quality_done: dict[str, dict[str, float]] = {}
    try:
        with progress_display() as progress:
            speed = time_to_equal_objective(
                decoder, observed, known, cfg, progress=progress.update, on_row=finished.append
            )
            if quality:
                tables = _quality_tables(decoder, ckpt, cfg, opts, common, dev, progress.update)
                for kind, table in tables:
                    quality_done[kind] = table
    except KeyboardInterrupt:
        # Ctrl-C: show what was measured; the boundary then exits 130.
        _print_partial(finished, quality_done, title, opts.count, common.json_output)
        raise
    if plot is not None:
        _plot(plot, speed, f"reconstruct ({corruption}), batch {opts.batch_size}")
    result = {
        "task": "reconstruct",
        "corruption": corruption,
        "device": str(dev),
        "device_name": device_name,
        "checkpoint": str(path),
        "seed": common.seed,
        "jiio_alpha_x": cfg.alpha_x,
        "jiio_alpha_x_start": cfg.alpha_x_start,
        "jiio_start_iterations": cfg.start_iterations,
        "jiio_memory": cfg.memory,
        "jiio_x_weight": cfg.x_weight,
        "solve_iters": cfg.inner_max_iter,
        "latent_weight": cfg.latent_weight,
        "speed": speed,
    }
    if quality:
        from jiio_cli.tasks.inverse.range_error import stored_range_error

        result["quality_psnr_db"] = quality_done
        result["quality_images"] = opts.count
        result["quality_range_error"] = stored_range_error(ckpt.extra) or 0.0
    if common.json_output:
        emit(result, json_output=True)
    else:
        _print_report(speed, quality_done, title, opts.count)


def _bench_config(ckpt: Any, opts: Any, graph: bool) -> Any:
    """The bench's settings: its defaults where an option was left out, and the latent
    weight the model was trained with (the problem as ``jiio reconstruct`` solves it)."""
    from jiio_cli.bench.reconstruct import ReconstructBenchConfig
    from jiio_cli.tasks.inverse.problems import trained_latent_weight

    defaults = ReconstructBenchConfig()

    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    return ReconstructBenchConfig(
        latent_weight=trained_latent_weight(ckpt.training_config),
        batch_size=opts.batch_size,
        naive_steps=opts.naive_steps,
        memory=given(opts.memory, defaults.memory),
        alpha_x=given(opts.alpha_x, defaults.alpha_x),
        alpha_x_start=given(opts.alpha_x_start, defaults.alpha_x_start),
        start_iterations=given(opts.start_iterations, defaults.start_iterations),
        x_weight=given(opts.x_weight, defaults.x_weight),
        inner_max_iter=given(opts.solve_iters, defaults.inner_max_iter),
        repeat=opts.repeat,
        graph=graph,
    )


def _print_quality(quality: dict[str, dict[str, float]], count: int) -> None:
    for kind, table in quality.items():
        print_table(
            [{"method": k, "psnr_db": v} for k, v in table.items()],
            title=f"PSNR on {count} held-out digits: {kind}",
        )


def _print_partial(
    finished: list[dict[str, Any]],
    quality: dict[str, dict[str, float]],
    title: str,
    count: int,
    json_output: bool,
) -> None:
    """What an interrupted bench had measured: its finished rows and quality tables."""
    partial: dict[str, Any] = {"task": "reconstruct", "complete": False, "rows": finished}
    if quality:
        partial["quality_psnr_db"] = quality
    if json_output:
        emit(partial, json_output=True)
        return
    if finished:
        print_table(finished, title=f"{title}, interrupted")
    _print_quality(quality, count)


def _plot(path: Path, speed: dict[str, Any], title: str) -> None:
    from jiio_cli.plot import write_line_plot

    naive_points = [(p["seconds"], p["objective"]) for p in speed["naive"]["trace"]]
    jiio_points = [(r["seconds"], r["objective"]) for r in speed["jiio"]["runs"]]
    write_line_plot(
        path,
        {"naive (Adam, full solves)": naive_points, "JIIO": jiio_points},
        xlabel="seconds",
        ylabel="mean objective",
        title=title,
    )


def _print_report(
    speed: dict[str, Any], quality: dict[str, dict[str, float]], title: str, count: int
) -> None:
    rows = [
        {
            "method": "naive (Adam, full solves)",
            "seconds": speed["naive"]["seconds_to_target"],
            "objective": speed["target_objective"],
            "f_evals": speed["naive"]["f_evals"],
        },
    ]
    for run in speed["jiio"]["runs"]:
        rows.append(
            {
                "method": f"jiio, {run['iterations']} iterations",
                "seconds": run["seconds"],
                "objective": run["objective"],
                "f_evals": run["f_evals"],
            }
        )
    print_table(rows, title=title)
    echo_speed_summary(speed)
    _print_quality(quality, count)


def _quality_tables(
    decoder: Any,
    ckpt: Any,
    cfg: Any,
    opts: Any,
    common: CommonConfig,
    dev: torch.device,
    progress: Callable[[str, int, int | None], None],
) -> Iterator[tuple[str, dict[str, float]]]:
    """(corruption, PSNR table) for inpainting then denoising, each as soon as it is done."""
    from jiio_cli.baselines import tune_tv_weight
    from jiio_cli.bench.reconstruct import CORRUPTIONS, quality_table
    from jiio_cli.data import load_mnist5k
    from jiio_cli.tasks.inverse.corruption import corrupt
    from jiio_cli.tasks.inverse.range_error import stored_range_error
    from jiio_cli.training import derived_generator

    clean = load_mnist5k("heldout")[0][: opts.count].to(dev)
    train, _ = load_mnist5k("train")
    tune = train[:200]
    noisy, _ = corrupt(tune, CORRUPTIONS["denoise"], derived_generator(common.seed, 6))
    weight = tune_tv_weight(noisy, tune)
    variance = stored_range_error(ckpt.extra) or 0.0
    for kind in ("inpaint", "denoise"):
        table = quality_table(
            decoder,
            clean,
            kind,
            cfg,
            opts.iterations,
            weight,
            common.seed,
            variance,
            progress=progress,
        )
        yield kind, table
