"""Line plots drawn with Pillow (no plotting library needed): objective against time.

The picture has labelled axes with tick values, one coloured polyline with point markers
per series, and a legend. It is written atomically as a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from jiio_cli.data.atomic import atomic_write

__all__ = ["write_line_plot"]

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
_SIZE = (720, 480)
_MARGIN = (80, 30, 30, 60)  # left, top, right, bottom


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.floor(low / step) * step
    return [first + i * step for i in range(count + 2) if first + i * step <= high + 1e-12]


def write_line_plot(
    path: Path | str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """Draw ``series`` (name → [(x, y), ...]) on shared axes and write a PNG atomically.

    Raises:
        ValueError: no points at all, or a non-finite coordinate.
    """
    points = [p for pts in series.values() for p in pts]
    if not points:
        raise ValueError("nothing to plot")
    if not all(math.isfinite(x) and math.isfinite(y) for x, y in points):
        raise ValueError("plot coordinates must be finite")
    x_lo, x_hi = min(0.0, min(x for x, _ in points)), max(x for x, _ in points)
    y_lo, y_hi = min(y for _, y in points), max(y for _, y in points)
    pad = 0.05 * (y_hi - y_lo or abs(y_hi) or 1.0)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    width, height = _SIZE
    left, top, right, bottom = _MARGIN
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_lo) / ((x_hi - x_lo) or 1.0) * plot_w
        py = top + (1 - (y - y_lo) / ((y_hi - y_lo) or 1.0)) * plot_h
        return px, py

    image = Image.new("RGB", _SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for tick in _ticks(x_lo, x_hi):
        if x_lo <= tick <= x_hi:
            px, _ = to_px(tick, y_lo)
            draw.line([px, top + plot_h, px, top + plot_h + 4], fill="black")
            draw.text((px - 10, top + plot_h + 8), f"{tick:g}", fill="black", font=font)
    for tick in _ticks(y_lo, y_hi):
        if y_lo <= tick <= y_hi:
            _, py = to_px(x_lo, tick)
            draw.line([left - 4, py, left, py], fill="black")
            draw.text((8, py - 6), f"{tick:.4g}", fill="black", font=font)
    draw.text((left + plot_w // 2 - 40, height - 22), xlabel, fill="black", font=font)
    draw.text((8, 8), f"{title}   (y: {ylabel})", fill="black", font=font)
    for k, (name, pts) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        pixels = [to_px(x, y) for x, y in sorted(pts)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        ly = top + 10 + 16 * k
        draw.line([left + plot_w - 150, ly + 6, left + plot_w - 125, ly + 6], fill=colour, width=3)
        draw.text((left + plot_w - 118, ly), name, fill="black", font=font)
    return atomic_write(path, lambda file: image.save(file, format="PNG"), "plot")
