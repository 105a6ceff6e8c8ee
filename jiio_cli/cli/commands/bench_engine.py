"""``jiio bench --task engine``: the solver's own cost per iteration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import typer

from jiio_cli.cli.options import CommonConfig
from jiio_cli.cli.output import emit, print_table
from jiio_cli.cli.progress import progress_display
from jiio_cli.errors import UsageError
from jiio_cli.models.precision import check_precision

if TYPE_CHECKING:
    from jiio_cli.bench.engine import EngineTiming

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
    A bar (or a line every 10 s) shows the rows; Ctrl-C prints the rows measured so far
    (``"complete": false`` in JSON) before the exit. Rows whose repeated timings spread
    widely get a note on stderr.
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
    plan = [
        (b, c, side, m, h, g)
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
        "rows": [],
    }
    timings: list[EngineTiming] = []
    try:
        with progress_display() as progress:
            for i, (b, c, side, m, h, g) in enumerate(plan):
                progress.update("engine timings", i, len(plan), f"batch {b}, memory {m}")
                timings.append(
                    time_engine(b, c, side, m, dev, graph=g, precision=precision, history=h)  # type: ignore[arg-type]
                )
                result["rows"] = [t.as_dict() for t in timings]
            progress.update("engine timings", len(plan), len(plan))
    except KeyboardInterrupt:
        # Ctrl-C: what was measured is still worth showing; the boundary then exits 130.
        result["complete"] = False
        _report(result, timings, precision, common, f"{len(timings)} of {len(plan)} rows")
        raise
    result["complete"] = True
    _report(result, timings, precision, common, None)


def _report(
    result: dict[str, Any],
    timings: list[EngineTiming],
    precision: str,
    common: CommonConfig,
    partial: str | None,
) -> None:
    """The JSON document or the table, then a note for every noisy row (stderr)."""
    if common.json_output:
        emit(result, json_output=True)
    else:
        shown = [
            {
                "batch": t.batch,
                "ch": t.channels,
                "side": t.size,
                "mem": t.memory,
                "mode": t.mode,
                "history": t.history,
                "f ms": 1e3 * t.f_seconds,
                "f+vjp ms": 1e3 * t.f_vjp_seconds,
                "iter ms": 1e3 * t.jiio_iteration_seconds,
                "iter ±%": 100 * t.jiio_iteration_spread,
                "iter/(f+vjp)": t.overhead_ratio,
                "history MiB/sample": t.jiio_history_mib_per_sample,
                "peak MiB/sample": t.jiio_peak_mib_per_sample or "",
            }
            for t in timings
        ]
        title = f"jiio bench --task engine ({precision}, {result['device_name']})"
        print_table(
            shown,
            title=title + (f", interrupted: {partial}" if partial else ""),
            caption="medians of repeated runs; iter ±%: interquartile range of the iteration's "
            "measurements over their median",
        )
        for t in timings:
            if t.graph_failure:
                typer.echo(f"CUDA graph capture failed, timed eagerly: {t.graph_failure}")
    for t in timings:
        note = t.spread_note()
        if note is not None:
            typer.echo(f"note: {note}", err=True)
