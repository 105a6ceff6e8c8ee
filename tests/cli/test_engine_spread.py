"""The engine bench's timings come with their spread, and a noisy row says so in words."""

from __future__ import annotations

import math
import statistics

import pytest

from jiio_cli.bench.engine import EngineTiming
from jiio_cli.bench.timing import LARGE_SPREAD, relative_spread


def test_relative_spread_is_the_interquartile_range_over_the_median() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 5.0]
    # Inclusive quartiles of 1..5 are 2 and 4, the median 3 (worked by hand).
    assert relative_spread(samples) == pytest.approx(2.0 / 3.0)
    assert relative_spread([0.5] * 7) == 0.0
    assert relative_spread([0.5]) == 0.0
    # One stray call (a page fault) barely moves it; a busy half of the runs does.
    steady = [1.0] * 19 + [30.0]
    busy = [1.0] * 10 + [20.0] * 10
    assert relative_spread(steady) < LARGE_SPREAD < relative_spread(busy)
    assert relative_spread(busy) == pytest.approx(
        (statistics.quantiles(busy, n=4, method="inclusive")[2] - 1.0) / 10.5
    )
    assert math.isinf(relative_spread([0.0, 0.0, 0.0, 1.0, 1.0]))


def _timing(**spreads: float) -> EngineTiming:
    return EngineTiming(
        batch=16,
        channels=64,
        size=32,
        memory=20,
        mode="eager",
        precision="fp32",
        history="fp32",
        f_seconds=0.0068,
        f_vjp_seconds=0.02,
        jiio_iteration_seconds=0.03,
        jiio_history_mib_per_sample=1.0,
        naive_history_mib_per_sample=0.5,
        repeats=5,
        **spreads,
    )


def test_a_noisy_row_gets_a_note_naming_what_was_noisy() -> None:
    quiet = _timing(f_spread=0.05, f_vjp_spread=0.1, jiio_iteration_spread=0.2)
    assert quiet.noisy == [] and quiet.spread_note() is None
    noisy = _timing(f_spread=20.0, f_vjp_spread=0.1, jiio_iteration_spread=0.9)
    assert noisy.noisy == ["f", "the JIIO iteration"]
    note = noisy.spread_note()
    assert note is not None
    assert "batch 16" in note and "memory 20" in note and "2000%" in note and "rough" in note
    assert noisy.as_dict()["noisy"] == ["f", "the JIIO iteration"]
