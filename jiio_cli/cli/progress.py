"""A rich progress bar on stderr for long work (hidden with --json or when not a TTY)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["batch_progress", "training_progress"]

# (event key, label, format) of the numbers a training bar shows when a task reports them.
_STEP_FIELDS = (
    ("objective", "obj", ".4g"),
    ("residual", "res", ".2g"),
    ("eps", "eps", ".3g"),
    ("adv_accuracy", "adv acc", ".3f"),
)
_EPOCH_FIELDS = (
    ("heldout_psnr", "held-out PSNR (dB)", ".2f"),
    ("heldout_clean_accuracy", "held-out clean acc", ".3f"),
    ("heldout_robust_accuracy", "robust acc", ".3f"),
    ("val_mse", "val MSE", ".4f"),
)


@contextmanager
def training_progress(
    total_epochs: int, enabled: bool
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yield a callback for :func:`jiio_cli.training.run_training` that drives a bar.

    The bar shows epoch, batch, loss and the task's step numbers (inner objective and
    residual, or the budget and adversarial accuracy), and after each epoch the held-out
    metric (PSNR, clean and robust accuracy, or a regressor's validation MSE).
    """
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda _event: None
        return
    columns = (
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=None, epoch=1, epochs=total_epochs, info="")
        last_eval = ""

        def update(event: dict[str, Any]) -> None:
            nonlocal last_eval
            if event["event"] == "step":
                shown = [f"loss {event['loss']:.4g}"]
                shown += [
                    f"{label} {event[key]:{fmt}}"
                    for key, label, fmt in _STEP_FIELDS
                    if isinstance(event.get(key), float | int)
                ]
                bar.update(
                    task,
                    total=event["batches"],
                    completed=event["batch"],
                    epoch=event["epoch"] + 1,
                    info="  ".join([*shown, last_eval]),
                )
            else:
                last_eval = "  ".join(
                    f"{label} {event[key]:{fmt}}"
                    for key, label, fmt in _EPOCH_FIELDS
                    if isinstance(event.get(key), float | int)
                )

        yield update


@contextmanager
def batch_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Yield ``update(label, done, total)`` driving a bar for batched evaluation work."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda _label, _done, _total: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=None)

        def update(label: str, done: int, total: int) -> None:
            bar.update(task, description=label, completed=done, total=total)

        yield update
