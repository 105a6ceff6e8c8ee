"""Find the smallest JIIO iteration budget that reaches a target, by doubling then bisection.

A benchmark's JIIO side answers "how long does JIIO need to reach the naive method's
objective?". Each budget is a separate run from scratch (its time includes everything a
user would pay for that budget), so the answer is the time of the smallest budget that
reaches the target. Doubling alone places it only within a factor of two; after the
first budget that reaches the target, a few bisection runs between it and the last
budget that missed narrow the bracket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["first_reaching_run", "search_budgets"]

Run = dict[str, Any]


def search_budgets(
    run: Callable[[int], Run],
    reached: Callable[[Run], bool],
    budgets: Sequence[int],
    refine: int = 3,
) -> list[Run]:
    """Run ``budgets`` in order until one reaches the target, then bisect ``refine`` times.

    Args:
        run: performs one run with the given iteration budget; its dict must hold
            ``"iterations"`` (the budget).
        reached: whether a run reached the target.
        budgets: increasing budgets to try first.
        refine: bisection steps between the last budget that missed and the first that
            reached (each one more run; stops early when the bracket cannot be split).

    Returns:
        Every run made, sorted by budget.
    """
    runs: list[Run] = []
    hit: int | None = None
    miss = 0
    for budget in budgets:
        runs.append(run(budget))
        if reached(runs[-1]):
            hit = budget
            break
        miss = budget
    if hit is not None:
        for _ in range(refine):
            middle = (miss + hit) // 2
            if middle <= miss or middle >= hit:
                break
            runs.append(run(middle))
            if reached(runs[-1]):
                hit = middle
            else:
                miss = middle
    return sorted(runs, key=lambda r: r["iterations"])


def first_reaching_run(runs: Sequence[Run], reached: Callable[[Run], bool]) -> Run | None:
    """The run with the smallest budget that reached the target, or None."""
    hits = [r for r in runs if reached(r)]
    return min(hits, key=lambda r: r["iterations"]) if hits else None
