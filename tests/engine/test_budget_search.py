"""The JIIO budget search of the benches: doubling, then bisection of the bracket."""

from __future__ import annotations

import pytest

from jiio_cli.bench.budget_search import first_reaching_run, search_budgets


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
