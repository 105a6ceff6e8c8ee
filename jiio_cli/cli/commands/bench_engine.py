"""``jiio bench --task engine``: the solver's own cost per iteration."""

from __future__ import annotations

from typing import Any

import torch
import typer

from jiio_cli.cli.options import CommonOptions
from jiio_cli.cli.output import emit, print_table
from jiio_cli.models.precision import check_precision

__all__ = ["run_engine_bench"]

MEMORIES = (5, 20)


def run_engine_bench(
    batch: int,
    channels: int,
    size: int,
    precision: str,
    graph: bool,
    common: CommonOptions,
) -> None:
    """Time f, f + VJP and one JIIO iteration at Anderson memories 5 and 20.

    With ``graph`` on a GPU each memory is timed eagerly and as a replayed CUDA graph.
    """
    from jiio_cli.bench.engine import time_engine

    dev = common.torch_device
    check_precision(precision, dev)
    modes = (False, True) if graph and dev.type == "cuda" else (False,)
    rows = [
        time_engine(batch, channels, size, m, dev, graph=g, precision=precision).as_dict()  # type: ignore[arg-type]
        for m in MEMORIES
        for g in modes
    ]
    result: dict[str, Any] = {
        "task": "engine",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": rows,
    }
    if common.json_output:
        emit(result, json_output=True)
        return
    shown = [
        {
            "memory": r["memory"],
            "mode": r["mode"],
            "f_ms": 1e3 * float(r["f_seconds"]),  # type: ignore[arg-type]
            "f_vjp_ms": 1e3 * float(r["f_vjp_seconds"]),  # type: ignore[arg-type]
            "iteration_ms": 1e3 * float(r["jiio_iteration_seconds"]),  # type: ignore[arg-type]
            "iteration / (f + vjp)": r["overhead_ratio"],
        }
        for r in rows
    ]
    print_table(
        shown,
        title=f"jiio bench --task engine (batch {batch}, {channels} channels, {size}x{size}, "
        f"{precision}, {result['device_name']})",
    )
    for r in rows:
        if r["graph_failure"]:
            typer.echo(f"CUDA graph capture failed, timed eagerly: {r['graph_failure']}")
