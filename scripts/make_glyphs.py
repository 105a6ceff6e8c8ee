"""Render the synthetic glyph tasks shipped in ``sample_data/glyphs.npz``.

Usage::

    python scripts/make_glyphs.py [--out sample_data/glyphs.npz]

Needs the DejaVu fonts (found in the usual system font folders). The output depends only
on the fonts and the fixed seed; see ``jiio_cli/data/glyphs.py`` for what is rendered.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from jiio_cli.data.glyphs import (
    META_TEST_SCRIPTS,
    META_TRAIN_SCRIPTS,
    find_dejavu_fonts,
    render_glyph_set,
    save_glyph_set,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("sample_data/glyphs.npz"))
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--drawers", type=int, default=20)
    args = parser.parse_args()
    fonts = find_dejavu_fonts()
    glyphs = render_glyph_set(
        fonts, META_TRAIN_SCRIPTS + META_TEST_SCRIPTS, drawers=args.drawers, size=args.size
    )
    save_glyph_set(args.out, glyphs)
    counts = Counter(glyphs.scripts)
    print(f"{len(fonts)} fonts, {len(glyphs.characters)} characters -> {args.out}")
    for script, n in counts.items():
        print(f"  {script}: {n}")


if __name__ == "__main__":
    main()
