"""The two lines under a time-to-equal-objective table, shared by the reconstruct and
adapt benches: the speed ratio, and how many of the naive method's solves were full."""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["echo_speed_summary"]


def echo_speed_summary(speed: dict[str, Any]) -> None:
    """Print the ratio of ``speed`` (a bench's ``speed`` document) and the share of the
    naive method's forward and adjoint solves that reached their tolerance."""
    ratio = speed["ratio"]
    typer.echo(
        "time-to-equal-objective ratio: "
        + (f"{ratio:.2f}x" if ratio else "JIIO did not reach the naive objective")
    )
    naive = speed["naive"]
    share = naive["inner_solves_converged"]
    typer.echo(
        f"naive method: {100 * share:.1f} % of its forward and adjoint solves reached "
        f"tolerance {naive['inner_tol']:g} within {naive['inner_max_iter']} iterations"
        + ("" if share == 1.0 else " (the others were truncated at the cap)")
    )
