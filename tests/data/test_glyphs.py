"""Glyph tasks: font discovery, rendering, the shipped set and its split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jiio_cli.data.glyphs import (
    META_TEST_SCRIPTS,
    META_TRAIN_SCRIPTS,
    GlyphSet,
    find_dejavu_fonts,
    load_glyph_set,
    render_glyph,
    render_glyph_set,
    save_glyph_set,
)
from jiio_cli.errors import JiioError

SHIPPED = Path(__file__).resolve().parents[2] / "sample_data" / "glyphs.npz"


def _fonts() -> list[Path]:
    try:
        return find_dejavu_fonts()
    except JiioError:
        pytest.skip("no DejaVu font on this machine (the shipped glyphs.npz covers the rest)")


def test_no_fonts_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JiioError, match="no DejaVu fonts found") as info:
        find_dejavu_fonts([tmp_path])
    assert "\n" not in str(info.value)


def test_font_search_finds_nested_files_and_skips_the_maths_font(tmp_path: Path) -> None:
    fonts = _fonts()
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "DejaVuSans.ttf").write_bytes(fonts[0].read_bytes())
    (nested / "DejaVuMathTeXGyre.ttf").write_bytes(fonts[0].read_bytes())
    assert [p.name for p in find_dejavu_fonts([tmp_path])] == ["DejaVuSans.ttf"]


def test_render_glyph_is_centred_ink_on_blank() -> None:
    from PIL import ImageFont

    fonts = _fonts()
    font = ImageFont.truetype(str(fonts[0]), 40)
    img = render_glyph(font, "O", 28)
    assert img.shape == (28, 28) and img.dtype == np.uint8
    assert img[0].max() == 0 and img[:, 0].max() == 0  # blank border
    ys, xs = np.nonzero(img > 64)
    # An "O" is symmetric: its ink is centred within a pixel.
    assert abs(ys.mean() - 13.5) < 1.0 and abs(xs.mean() - 13.5) < 1.0


def test_rendered_set_is_reproducible_and_drawers_differ(tmp_path: Path) -> None:
    fonts = _fonts()
    a = render_glyph_set(fonts, ["Hebrew"], drawers=4, size=20, max_per_script=5, seed=3)
    b = render_glyph_set(fonts, ["Hebrew"], drawers=4, size=20, max_per_script=5, seed=3)
    c = render_glyph_set(fonts, ["Hebrew"], drawers=4, size=20, max_per_script=5, seed=4)
    assert a.images.shape == (5, 4, 20, 20)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert all(not np.array_equal(a.images[0, 0], a.images[0, r]) for r in range(1, 4))
    save_glyph_set(tmp_path / "g.npz", a)
    back = load_glyph_set(tmp_path / "g.npz")
    assert np.array_equal(back.images, a.images) and back.characters == a.characters


def test_lookalike_characters_are_kept_once() -> None:
    fonts = _fonts()
    glyphs = render_glyph_set(fonts, ["Latin", "Cyrillic"], drawers=1, max_per_script=100)
    # Cyrillic А (U+0410) is drawn exactly like Latin A in DejaVu Sans.
    assert "A" in glyphs.characters and "\u0410" not in glyphs.characters


def test_shipped_glyph_set_has_disjoint_splits() -> None:
    glyphs = load_glyph_set(SHIPPED)
    assert glyphs.images.dtype == np.uint8 and glyphs.images.shape[1:] == (20, 28, 28)
    train = glyphs.select(META_TRAIN_SCRIPTS)
    test = glyphs.select(META_TEST_SCRIPTS)
    assert not set(train.characters) & set(test.characters)
    assert len(train.characters) + len(test.characters) == len(glyphs.characters)
    assert len(test.characters) >= 20  # enough for 20-way episodes
    # No test glyph (first drawer) equals a training glyph.
    train_keys = {img.tobytes() for img in train.images[:, 0]}
    assert not any(img.tobytes() in train_keys for img in test.images[:, 0])


def test_damaged_glyph_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(JiioError, match="not a glyph set"):
        load_glyph_set(tmp_path / "bad.npz")
    with pytest.raises(JiioError, match="not found"):
        load_glyph_set(tmp_path / "missing.npz")


def test_select_keeps_alignment() -> None:
    g = GlyphSet(
        np.arange(3 * 2 * 4).reshape(3, 2, 2, 2).astype(np.uint8), ("a", "b", "c"), ("X", "Y", "X")
    )
    s = g.select(["X"])
    assert s.characters == ("a", "c") and np.array_equal(s.images[1], g.images[2])
