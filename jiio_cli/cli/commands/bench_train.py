"""``jiio bench --task train``: training with the JIIO inner solve against the naive one."""

from __future__ import annotations

from typing import Any

import torch

from jiio_cli.cli.output import emit, print_table
from jiio_cli.cli.progress import progress_display
from jiio_cli.config import CommonConfig
from jiio_cli.errors import UsageError

__all__ = ["run_train_bench"]


def run_train_bench(
    train_task: str, epochs: int, max_train: int, batch_size: int, common: CommonConfig
) -> None:
    """Run both trainings and print the comparison (table, or JSON with ``--json``)."""
    if train_task not in ("denoise", "adversarial"):
        raise UsageError(f"invalid --train-task {train_task!r}: expected denoise or adversarial")
    if epochs < 1 or max_train < 1:
        raise UsageError("--epochs and --max-train must be at least 1")
    from jiio_cli.bench.train import training_comparison

    dev = common.torch_device
    naive = "naive" if train_task == "denoise" else "pgd"
    title = f"jiio bench --task train ({train_task}, {epochs} epoch(s), {max_train} images)"
    finished: dict[str, dict[str, Any]] = {}

    try:
        with progress_display() as display:

            def progress(inner: str, event: dict[str, Any]) -> None:
                if event["event"] == "step":
                    display.update(f"train with {inner}", event["step"], event["steps"])

            report = training_comparison(
                train_task,  # type: ignore[arg-type]
                dev,
                epochs=epochs,
                max_train=max_train,
                batch_size=batch_size,
                seed=common.seed,
                progress=progress,
                on_run=finished.__setitem__,
            )
    except KeyboardInterrupt:
        # Ctrl-C: the runs that finished are still a result; the boundary exits 130.
        if common.json_output:
            emit({"task": "train", "complete": False, **finished}, json_output=True)
        elif finished:
            rows = [{"inner": inner, **summary} for inner, summary in finished.items()]
            print_table(rows, title=f"{title}, interrupted")
        raise
    result = {
        "task": "train",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "seed": common.seed,
        **report,
    }
    if common.json_output:
        emit(result, json_output=True)
        return
    print_table([{"inner": inner, **report[inner]} for inner in ("jiio", naive)], title=title)
    print_table([{"ratio (naive seconds / JIIO seconds)": report["ratio"]}])
