"""``jiio bench --task engine``: the solver's own cost per iteration."""

from __future__ import annotations

from typing import Any

import torch
import typer

from jiio_cli.cli.options import CommonConfig
from jiio_cli.cli.output import emit, print_table
from jiio_cli.errors import UsageError
from jiio_cli.models.precision import check_precision

__all__ = ["parse_histories", "parse_sizes", "run_engine_bench"]

MEMORIES = (5, 20)


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """``"16x64x32,64x64x32"`` → [(batch, channels, side), ...]; one-line UsageError."""
    sizes = []
    for part in text.split(","):
        fields = part.strip().lower().split("x")
        try:
            batch, channels, side = (int(f) for f in fields)
        except ValueError:
            raise UsageError(
                f"invalid --sizes entry {part.strip()!r}: give BATCHxCHANNELSxSIDE, "
                "e.g. 64x64x32, comma-separated"
            ) from None
        if not (1 <= batch <= 4096 and 1 <= channels <= 1024 and 4 <= side <= 512):
            raise UsageError(
                f"invalid --sizes entry {part.strip()!r}: need 1 ≤ batch ≤ 4096, "
                "1 ≤ channels ≤ 1024 and 4 ≤ side ≤ 512"
            )
        sizes.append((batch, channels, side))
    return sizes


def parse_histories(text: str) -> tuple[str, ...]:
    """``"fp32,bf16"`` → ("fp32", "bf16"); one-line UsageError for anything else."""
    names = tuple(part.strip().lower() for part in text.split(","))
    bad = [name for name in names if name not in ("fp32", "bf16")]
    if bad or not names:
        raise UsageError(f"invalid --history {text!r}: give fp32, bf16 or fp32,bf16")
    return names


def run_engine_bench(
    sizes: list[tuple[int, int, int]],
    precision: str,
    graph: bool,
    common: CommonConfig,
    histories: tuple[str, ...] = ("fp32",),
) -> None:
    """Time f, f + VJP and one JIIO iteration at each (batch, channels, side) and Anderson
    memories 5 and 20, for each history precision in ``histories``.

    With ``graph`` on a GPU each memory is timed eagerly and as a replayed CUDA graph.
    """
    from jiio_cli.bench.engine import time_engine

    dev = common.torch_device
    check_precision(precision, dev)
    for _, channels, _ in sizes:
        if channels % 8:
            raise UsageError(
                f"invalid channel count {channels}: the engine bench's conv cell needs a "
                "multiple of 8 (GroupNorm uses 8 groups)"
            )
    modes = (False, True) if graph and dev.type == "cuda" else (False,)
    rows = [
        time_engine(b, c, side, m, dev, graph=g, precision=precision, history=h).as_dict()  # type: ignore[arg-type]
        for b, c, side in sizes
        for m in MEMORIES
        for h in histories
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
            "batch": r["batch"],
            "ch": r["channels"],
            "side": r["size"],
            "mem": r["memory"],
            "mode": r["mode"],
            "history": r["history"],
            "f ms": 1e3 * float(r["f_seconds"]),  # type: ignore[arg-type]
            "f+vjp ms": 1e3 * float(r["f_vjp_seconds"]),  # type: ignore[arg-type]
            "iter ms": 1e3 * float(r["jiio_iteration_seconds"]),  # type: ignore[arg-type]
            "iter/(f+vjp)": r["overhead_ratio"],
            "history MiB/sample": r["jiio_history_mib_per_sample"],
            "peak MiB/sample": r["jiio_peak_mib_per_sample"] or "",
        }
        for r in rows
    ]
    print_table(
        shown,
        title=f"jiio bench --task engine ({precision}, {result['device_name']})",
    )
    for r in rows:
        if r["graph_failure"]:
            typer.echo(f"CUDA graph capture failed, timed eagerly: {r['graph_failure']}")
