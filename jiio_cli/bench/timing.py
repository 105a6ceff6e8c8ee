"""Wall-clock timing that is honest on both CPU and GPU.

On CUDA, work is timed with CUDA events after a warm-up and a synchronisation, so the
host never measures its own queueing; on the CPU, with ``time.perf_counter``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = [
    "LARGE_SPREAD",
    "StepClock",
    "relative_spread",
    "time_call",
    "time_samples",
    "timed_median",
]

LARGE_SPREAD = 0.25
"""A relative spread (:func:`relative_spread`) above which a timing is called noisy."""

T = TypeVar("T")


def timed_median(fn: Callable[[], T], device: torch.device, repeat: int = 1) -> tuple[T, float]:
    """Run ``fn`` ``repeat`` times; return its last result and the median seconds per run.

    Each run is timed whole (CUDA events on a GPU, ``perf_counter`` on the CPU) after the
    device has finished earlier work. No warm-up here: callers warm up once for all runs.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    samples: list[float] = []
    result: T | None = None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            result = fn()
            samples.append(time.perf_counter() - t0)
    assert result is not None
    return result, statistics.median(samples)


def time_samples(
    fn: Callable[[], object], device: torch.device, repeat: int = 10, warmup: int = 3
) -> list[float]:
    """Seconds of each of ``repeat`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeat):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1000.0)
    else:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return samples


def time_call(
    fn: Callable[[], object], device: torch.device, repeat: int = 10, warmup: int = 3
) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` timed calls after ``warmup``."""
    return statistics.median(time_samples(fn, device, repeat, warmup))


def relative_spread(samples: list[float]) -> float:
    """Interquartile range over |median| of repeated timings: 0 for perfectly steady ones.

    Quartiles rather than the full range: one call delayed by the garbage collector or a
    page fault says little, a machine that is busy for a quarter of the runs says a lot.
    0 for fewer than two samples, ``inf`` for a zero median with a non-zero range.
    """
    if not samples:
        raise ValueError("need at least one sample")
    if len(samples) < 2:
        return 0.0
    low, _, high = statistics.quantiles(samples, n=4, method="inclusive")
    middle = abs(statistics.median(samples))
    if middle == 0:
        return 0.0 if high == low else float("inf")
    return (high - low) / middle


class StepClock:
    """Training progress callback that splits wall-clock time into steps and the rest.

    Each event of :func:`~jiio_cli.training.run_training` closes an interval: intervals
    that end in a ``step`` event are training time, those that end in an ``epoch`` event
    (held-out evaluation, checkpoints) are the rest.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.last = time.perf_counter()
        self.train_seconds = 0.0
        self.other_seconds = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if event["event"] == "step":
            self.train_seconds += now - self.last
        else:
            self.other_seconds += now - self.last
        self.last = now
