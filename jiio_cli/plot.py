"""Line plots of objective against time, drawn with matplotlib (the optional ``jiio[plot]``).

One line with point markers per series on shared axes, a legend, a grid and labelled axes;
the x axis starts at 0 (time starts there). The PNG is written atomically. matplotlib is
imported only when a plot is drawn, so the rest of jiio never needs it; a command given
``--plot`` calls :func:`require_matplotlib` before its work, so a missing install is one
line on stderr at once rather than a failure after a long benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from jiio_cli.data.atomic import atomic_write
from jiio_cli.errors import JiioError

__all__ = ["PLOT_SIZE", "require_matplotlib", "write_line_plot"]

PLOT_SIZE = (720, 480)
"""Width and height of the PNG, in pixels."""

_DPI = 100


def require_matplotlib() -> None:
    """Raise a one-line :class:`JiioError` (exit 1) naming the fix if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise JiioError(
            "--plot needs matplotlib, which is not installed: pip install 'jiio[plot]'"
        ) from None


def write_line_plot(
    path: Path | str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """Draw ``series`` (name → [(x, y), ...], any order) on shared axes; write a PNG atomically.

    Raises:
        ValueError: no points at all, or a non-finite coordinate.
        JiioError: matplotlib is not installed, or the file cannot be written.
    """
    points = [p for pts in series.values() for p in pts]
    if not points:
        raise ValueError("nothing to plot")
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in points):
        raise ValueError("plot coordinates must be finite")
    require_matplotlib()
    # The object-oriented Figure, not pyplot: no global figure state and no GUI backend.
    from matplotlib.figure import Figure

    width, height = PLOT_SIZE
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    for name, pts in series.items():
        ordered = sorted(pts)
        axes.plot(
            [x for x, _ in ordered], [y for _, y in ordered], marker="o", markersize=4, label=name
        )
    axes.set_xlim(left=min(0.0, min(x for x, _ in points)))
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()

    def save(file: BinaryIO) -> None:
        figure.savefig(file, format="png", dpi=_DPI)

    return atomic_write(path, save, "plot")
