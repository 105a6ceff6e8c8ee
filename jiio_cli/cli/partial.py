"""What a batched command had finished when it was interrupted (Ctrl-C, SIGTERM).

Commands that work through their items in batches (``adapt --episodes``, ``attack``) keep
the task's result over the batches finished so far in a :class:`FinishedBatches`; when
the interrupt reaches them they report that result, marked partial, and let the
interrupt go on to the error boundary, which exits 130. The marker reads
``partial: 3 of 10 batches, 30 episodes`` in tables and is the ``partial`` object of the
JSON documents (``complete`` false).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["FinishedBatches"]

R = TypeVar("R")


@dataclass
class FinishedBatches(Generic[R]):
    """The latest result over whole batches of a run of ``total`` items (``noun``) taken
    ``batch_size`` at a time, and how many items it covers.

    Attributes:
        total: items asked for.
        batch_size: items per batch (the last batch may be smaller).
        noun: what the items are, plural (``episodes``, ``images``).
        result: the task's result over the first ``done`` items (None before the first
            batch has finished).
        done: items finished.
    """

    total: int
    batch_size: int
    noun: str
    result: R | None = None
    done: int = 0

    def record(self, result: R, done: int) -> None:
        """Keep ``result``, the task's result over the first ``done`` items."""
        self.result, self.done = result, done

    @property
    def batches(self) -> int:
        """Batches of the whole run."""
        return math.ceil(self.total / self.batch_size)

    @property
    def batches_done(self) -> int:
        """Batches finished (every batch but the last holds ``batch_size`` items)."""
        return math.ceil(self.done / self.batch_size)

    def note(self) -> str:
        """``partial: 3 of 10 batches, 30 episodes``."""
        return f"partial: {self.batches_done} of {self.batches} batches, {self.done} {self.noun}"

    def as_json(self) -> dict[str, Any]:
        """The marker of a JSON document: ``{"complete": false, "partial": {...}}``."""
        return {
            "complete": False,
            "partial": {
                "batches_done": self.batches_done,
                "batches": self.batches,
                f"{self.noun}_done": self.done,
                f"{self.noun}_requested": self.total,
            },
        }
