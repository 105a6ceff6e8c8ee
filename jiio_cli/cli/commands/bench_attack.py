"""``jiio bench --task attack``: the JIIO attack against PGD or APGD-CE on held-out digits."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from jiio_cli.cli.output import emit, print_table
from jiio_cli.cli.progress import progress_display
from jiio_cli.config import CommonConfig, parse_eps
from jiio_cli.errors import UsageError

__all__ = ["run_attack_bench"]


def run_attack_bench(
    checkpoint: Path | None,
    eps_text: str,
    norm: str,
    images: int,
    common: CommonConfig,
    plot: Path | None = None,
    repeat: int = 1,
    graph: bool = False,
    candidates: int | None = None,
    baseline: str = "pgd",
) -> None:
    """Time both attacks on the first ``images`` held-out digits and print the result."""
    if norm not in ("linf", "l2"):
        raise UsageError(f"invalid --norm {norm!r}: expected linf or l2")
    if baseline not in ("pgd", "apgd"):
        raise UsageError(f"invalid --baseline {baseline!r}: expected pgd or apgd")
    eps = parse_eps(eps_text)
    from jiio_cli.bench.attack import attack_time_to_equal_objective
    from jiio_cli.tasks.adversarial.attacks import ThreatModel
    from jiio_cli.tasks.adversarial.data import load_attack_target

    dev = common.torch_device
    target = load_attack_target(checkpoint, None, images, dev)
    bench_config = _bench_config(repeat, graph, candidates, baseline)
    finished: list[dict[str, Any]] = []
    try:
        with progress_display() as display:
            speed = attack_time_to_equal_objective(
                target.model,
                target.images,
                target.labels,
                ThreatModel(norm, eps),  # type: ignore[arg-type]
                bench_config,
                common.seed,
                progress=display.update,
                on_row=lambda method, row: finished.append({"method": method, **row}),
            )
    except KeyboardInterrupt:
        # Ctrl-C: the budgets measured so far; the boundary then exits 130.
        if common.json_output:
            emit({"task": "attack", "complete": False, "rows": finished}, json_output=True)
        elif finished:
            print_table(finished, title="jiio bench --task attack, interrupted")
        raise
    if plot is not None:
        _plot(plot, speed, baseline)
    result = {
        "task": "attack",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "checkpoint": str(target.checkpoint),
        "seed": common.seed,
        "jiio_candidates": bench_config.jiio.candidates,
        "speed": speed,
    }
    if common.json_output:
        emit(result, json_output=True)
    else:
        _print_report(speed, baseline)


def _bench_config(repeat: int, graph: bool, candidates: int | None, baseline: str) -> Any:
    """The bench's defaults with the options given: repeats, CUDA graphs, JIIO's
    candidate iterates, and the method JIIO is timed against."""
    from jiio_cli.bench.attack import AttackBenchConfig

    defaults = AttackBenchConfig()
    jiio = dataclasses.replace(defaults.jiio, graph=graph)
    if candidates is not None:
        jiio = dataclasses.replace(jiio, candidates=candidates)
    return dataclasses.replace(
        defaults,
        jiio=jiio,
        repeat=repeat,
        baseline=baseline,  # type: ignore[arg-type]
    )


def _plot(path: Path, speed: dict[str, Any], baseline: str) -> None:
    from jiio_cli.plot import write_line_plot

    base_name = "PGD" if baseline == "pgd" else "APGD-CE"
    write_line_plot(
        path,
        {
            f"{base_name} (full solves)": [
                (r["seconds"], r["robust_accuracy"]) for r in speed[baseline]
            ],
            "JIIO": [(r["seconds"], r["robust_accuracy"]) for r in speed["jiio"]],
        },
        xlabel="seconds",
        ylabel="robust accuracy",
        title=f"attack ({speed['threat']}), {speed['images']} images",
    )


def _print_report(speed: dict[str, Any], baseline: str) -> None:
    rows = [{"method": m, **r} for m in (baseline, "jiio") for r in speed[m]]
    print_table(
        rows, title=f"jiio bench --task attack ({speed['threat']}, {speed['images']} images)"
    )
    ratio = speed["ratio"]
    print_table(
        [
            {
                "target_robust_accuracy": speed["target_robust_accuracy"],
                f"{baseline}_seconds": speed["pgd_seconds_to_target"],
                "jiio_seconds": speed["jiio_seconds_to_target"],
                "ratio": ratio if ratio is not None else "JIIO did not reach the target",
                "ratio_by_mean_loss": speed["ratio_by_loss"],
            }
        ],
        title="time to equal robust accuracy",
    )
