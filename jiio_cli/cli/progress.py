"""A rich progress bar on stderr for long work (hidden with --json or when not a TTY)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["batch_progress", "training_progress"]


@contextmanager
def training_progress(
    total_epochs: int, enabled: bool
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yield a callback for :func:`jiio_cli.training.run_training` that drives a bar.

    The bar shows epoch, batch, loss, the inner JIIO objective and residual, and after
    each epoch the held-out PSNR.
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
                info = (
                    f"loss {event['loss']:.4g}  obj {event.get('objective', float('nan')):.4g}"
                    f"  res {event.get('residual', float('nan')):.2g}  {last_eval}"
                )
                bar.update(
                    task,
                    total=event["batches"],
                    completed=event["batch"],
                    epoch=event["epoch"] + 1,
                    info=info,
                )
            else:
                psnr = event.get("heldout_psnr")
                last_eval = f"held-out PSNR {psnr:.2f} dB" if psnr is not None else ""

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
