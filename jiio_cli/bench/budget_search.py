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

__all__ = ["first_reaching_run", "jiio_time_to_target", "search_budgets"]

Run = dict[str, Any]

JIIO_LABEL = "jiio budgets"
"""The progress label of the JIIO budget runs."""


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


def jiio_time_to_target(
    measure: Callable[[int], Run],
    objective_key: str,
    target: float,
    budgets: Sequence[int],
    refine: int,
    progress: Callable[[str, int, int], None],
    on_row: Callable[[Run], None] | None = None,
) -> Run:
    """JIIO's side of a time-to-equal-objective bench: :func:`search_budgets` over
    ``measure(budget)`` (one timed JIIO run from scratch; its row holds ``iterations``,
    ``seconds`` and ``objective_key``) until the objective is at most ``target``.

    ``progress("jiio budgets", done, most)`` hears each run (at most
    ``len(budgets) + refine``); ``on_row`` gets each row, as method ``jiio, N iterations``,
    as soon as it is measured.

    Returns:
        ``{"runs": every row, by budget, "seconds_to_target": the seconds of the smallest
        budget that reached the target, or None when none did}``.
    """
    most_runs = len(budgets) + refine
    done = 0

    def run(budget: int) -> Run:
        nonlocal done
        progress(JIIO_LABEL, done, most_runs)
        row = measure(budget)
        done += 1
        if on_row is not None:
            on_row({"method": f"jiio, {budget} iterations", **row})
        return row

    def reached(row: Run) -> bool:
        return row[objective_key] <= target

    runs = search_budgets(run, reached, budgets, refine)
    progress(JIIO_LABEL, done, done)
    first = first_reaching_run(runs, reached)
    return {"runs": runs, "seconds_to_target": first["seconds"] if first else None}
