"""Objective-against-time plots: drawn with matplotlib, refused in one line without it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.errors import JiioError
from jiio_cli.plot import PLOT_SIZE, write_line_plot

runner = CliRunner(env={"NO_COLOR": "1"})

# matplotlib's first two default line colours, in the order series are drawn.
FIRST, SECOND = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


def _pixels_near(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(row, column) of the pixels within 10 levels of ``colour`` in each channel."""
    close = (np.abs(picture[..., :3].astype(int) - np.array(colour)) <= 10).all(axis=-1)
    return np.argwhere(close)


def test_plot_draws_each_series_where_its_points_are(tmp_path: Path) -> None:
    # A rising series and a falling one: the first colour's pixels must climb from left to
    # right (image rows count downwards) and the second's fall.
    rising = [(float(t), float(t)) for t in (3, 0, 1, 2)]  # out of order on purpose
    falling = [(float(t), 3.0 - t) for t in range(4)]
    out = write_line_plot(
        tmp_path / "plot.png",
        {"rising": rising, "falling": falling},
        xlabel="seconds",
        ylabel="objective",
        title="t",
    )
    assert out == tmp_path / "plot.png" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == PLOT_SIZE
        picture = np.asarray(image.convert("RGB"))
    for colour, sign in ((FIRST, -1), (SECOND, 1)):
        where = _pixels_near(picture, colour)
        assert len(where) > 200, colour
        slope = np.polyfit(where[:, 1], where[:, 0], 1)[0]
        assert sign * slope > 0.3, (colour, slope)


def test_plot_refuses_nothing_to_draw(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing"):
        write_line_plot(tmp_path / "a.png", {"x": [], "y": []}, xlabel="s", ylabel="y", title="t")
    with pytest.raises(ValueError, match="finite"):
        write_line_plot(
            tmp_path / "b.png", {"x": [(float("inf"), 1.0)]}, xlabel="s", ylabel="y", title="t"
        )
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(JiioError, match=r"pip install 'jiio\[plot\]'"):
        write_line_plot(tmp_path / "a.png", {"x": [(0.0, 1.0)]}, xlabel="s", ylabel="y", title="t")
    assert not list(tmp_path.iterdir())


def test_bench_refuses_plot_without_matplotlib_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jiio_cli.cli.commands import bench_attack

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the bench ran although its plot could not be drawn")

    monkeypatch.setattr(bench_attack, "run_attack_bench", never)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plot = tmp_path / "attack.png"
    args = ["bench", "--task", "attack", "--plot", str(plot), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "error: --plot needs matplotlib, which is not installed: pip install 'jiio[plot]'\n"
    )
    assert result.stdout == "" and not plot.exists()
