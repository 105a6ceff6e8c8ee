"""Wall-clock seconds of a piece of work on any device.

CUDA work is queued asynchronously, so a reading of ``time.perf_counter`` is honest only
after the device has finished: :func:`timed` synchronises before starting the clock and
before stopping it. The evaluations of attacks and of few-shot adaptation time their
methods with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["synchronize", "timed"]

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], T]) -> tuple[T, float]:
    """``work()`` and the seconds it took, the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    out = work()
    synchronize(device)
    return out, time.perf_counter() - start
