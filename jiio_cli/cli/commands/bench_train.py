"""``jiio bench --task train``: training with the JIIO inner solve against the naive one."""

from __future__ import annotations

import torch

from jiio_cli.cli.output import emit, print_table
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
    report = training_comparison(
        train_task,  # type: ignore[arg-type]
        dev,
        epochs=epochs,
        max_train=max_train,
        batch_size=batch_size,
        seed=common.seed,
    )
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
    naive = "naive" if train_task == "denoise" else "pgd"
    print_table(
        [{"inner": inner, **report[inner]} for inner in ("jiio", naive)],
        title=f"jiio bench --task train ({train_task}, {epochs} epoch(s), {max_train} images)",
    )
    print_table([{"ratio (naive seconds / JIIO seconds)": report["ratio"]}])
