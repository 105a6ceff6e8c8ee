"""The JIIO budget search of the benches: doubling, then bisection of the bracket."""

from __future__ import annotations

from typing import Any

import pytest

from jiio_cli.bench.budget_search import first_reaching_run, jiio_time_to_target, search_budgets


@pytest.mark.parametrize("threshold", [1, 7, 10, 33, 79, 80, 81, 160, 500])
def test_search_brackets_the_smallest_reaching_budget(threshold: int) -> None:
    calls: list[int] = []

    def run(budget: int) -> dict[str, int]:
        calls.append(budget)
        return {"iterations": budget, "value": budget}

    def reached(r: dict[str, int]) -> bool:
        return r["value"] >= threshold

    runs = search_budgets(run, reached, (10, 20, 40, 80, 160), refine=3)
    budgets = [r["iterations"] for r in runs]
    assert budgets == sorted(calls) and len(set(calls)) == len(calls)
    first = first_reaching_run(runs, reached)
    if threshold > 160:
        assert first is None and calls == [10, 20, 40, 80, 160]
        return
    assert first is not None and first["iterations"] >= threshold
    # Every budget below the found one that was tried missed.
    assert all(not reached(r) for r in runs if r["iterations"] < first["iterations"])
    doubling = [b for b in (10, 20, 40, 80, 160) if b <= max(calls)]
    bracket = (
        max([0, *[b for b in doubling if b < threshold]]),
        min(b for b in doubling if b >= threshold),
    )
    # Three halvings of the doubling bracket (or down to single budgets).
    assert first["iterations"] - threshold <= max(1, (bracket[1] - bracket[0]) // 8 + 1)
    assert len(calls) <= len(doubling) + 3


def test_no_refinement_keeps_the_doubling_runs() -> None:
    runs = search_budgets(
        lambda b: {"iterations": b}, lambda r: r["iterations"] >= 30, (10, 20, 40), refine=0
    )
    assert [r["iterations"] for r in runs] == [10, 20, 40]


@pytest.mark.parametrize(
    ("target", "order", "seconds"),
    [(25.0, [100, 200, 400, 300], 0.3), (-1.0, [100, 200, 400], None)],
)
def test_time_to_target_reports_every_run_and_the_first_reaching_seconds(
    target: float, order: list[int], seconds: float | None
) -> None:
    """Objective 7500/budget at 1 ms an iteration: target 25 is first reached at budget
    300 (doubling hits at 400, one bisection finds 300); -1 is never reached."""
    events: list[tuple[str, int, int]] = []
    rows: list[dict[str, Any]] = []

    def measure(budget: int) -> dict[str, Any]:
        return {"iterations": budget, "seconds": budget / 1000, "objective": 7500 / budget}

    def progress(label: str, done: int, most: int) -> None:
        events.append((label, done, most))

    jiio = jiio_time_to_target(
        measure, "objective", target, (100, 200, 400), 1, progress, rows.append
    )
    assert jiio["seconds_to_target"] == seconds
    assert [r["iterations"] for r in jiio["runs"]] == sorted(order)
    # Each row reaches on_row as it is measured, named by its budget.
    assert [r["iterations"] for r in rows] == order
    assert [r["method"] for r in rows] == [f"jiio, {b} iterations" for b in order]
    # A progress event before each run (of at most 3 budgets + 1 bisection), then the total.
    runs = len(order)
    assert events == [("jiio budgets", k, 4) for k in range(runs)] + [("jiio budgets", runs, runs)]
