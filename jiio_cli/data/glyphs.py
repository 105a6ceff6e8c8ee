"""Omniglot-like glyph tasks rendered from the DejaVu fonts: a synthetic few-shot dataset.

Classes are characters, alphabets are Unicode scripts and the "drawers" of a character
are renderings by the DejaVu fonts that have a glyph for it (Sans, Serif, Mono; bold,
oblique, condensed, extra-light), each with its own random affine jitter (rotation,
scale, shear, shift). This is not handwriting: it is a stand-in for Omniglot that needs
no download. Meta-train and meta-test alphabets are disjoint (:data:`META_TRAIN_SCRIPTS`,
:data:`META_TEST_SCRIPTS`), and characters whose plain DejaVu Sans rendering repeats an
earlier one (Latin A, Greek Α and Cyrillic А) are kept only once.

Images are uint8 (S, S) with 0 = blank and 255 = ink, the convention of every few-shot
pool here (see :mod:`jiio_cli.data.episodes`). A rendered set is saved as an ``.npz``;
the repository ships one in ``sample_data/glyphs.npz`` (made by
``scripts/make_glyphs.py``), so neither the tests nor the shipped model depend on the
fonts of the machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "FONT_FOLDERS",
    "META_TEST_SCRIPTS",
    "META_TRAIN_SCRIPTS",
    "SCRIPTS",
    "GlyphSet",
    "find_dejavu_fonts",
    "load_glyph_set",
    "render_glyph",
    "render_glyph_set",
    "save_glyph_set",
]

FONT_FOLDERS: tuple[str, ...] = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "~/Library/Fonts",
    "C:/Windows/Fonts",
)
"""Where fonts live on Linux, macOS and Windows; searched recursively for DejaVu*.ttf."""

SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": ((0x41, 0x5A), (0x61, 0x7A)),
    "Greek": ((0x391, 0x3A9), (0x3B1, 0x3C9)),
    "Cyrillic": ((0x410, 0x44F),),
    "Armenian": ((0x531, 0x556),),
    "Georgian": ((0x10D0, 0x10FA),),
    "Canadian_Syllabics": ((0x1401, 0x1480),),
    "Braille": ((0x2801, 0x28FF),),
    "Hebrew": ((0x5D0, 0x5EA),),
    "Arabic": ((0x627, 0x64A),),
    "Tifinagh": ((0x2D30, 0x2D65),),
    "NKo": ((0x7CA, 0x7EA),),
    "Lao": ((0xE81, 0xEAE),),
}
"""Alphabets as inclusive code-point ranges; characters without a DejaVu glyph are skipped."""

META_TRAIN_SCRIPTS: tuple[str, ...] = (
    "Latin",
    "Greek",
    "Cyrillic",
    "Armenian",
    "Georgian",
    "Canadian_Syllabics",
    "Braille",
)
META_TEST_SCRIPTS: tuple[str, ...] = ("Hebrew", "Arabic", "Tifinagh", "NKo", "Lao")

CANVAS = 64
"""Render size in pixels, before the jitter and the downsampling."""

JITTER_ROTATION = 12.0
"""Largest rotation of a drawer's affine jitter, in degrees (at strength 1)."""
JITTER_SCALE = (-0.15, 0.1)
"""Range of its scale change (the scale is 1 plus a uniform draw from it)."""
JITTER_SHEAR = 0.15
"""Largest shear."""
JITTER_SHIFT = 3.0
"""Largest shift, in pixels of the 64-pixel render canvas (``CANVAS``)."""
_FONT_PIXELS = 40
_MISSING_PROBE = "\ue000"  # a private-use code point: every font draws its .notdef box


@dataclass(frozen=True)
class GlyphSet:
    """Rendered glyph classes.

    Attributes:
        images: uint8 (N, R, S, S): N characters, R drawers each, 0 blank / 255 ink.
        characters: the N characters.
        scripts: the alphabet of each character.
    """

    images: np.ndarray
    characters: tuple[str, ...]
    scripts: tuple[str, ...]

    def select(self, scripts: Iterable[str]) -> GlyphSet:
        """The classes whose alphabet is in ``scripts``."""
        wanted = set(scripts)
        keep = [i for i, s in enumerate(self.scripts) if s in wanted]
        return GlyphSet(
            self.images[keep],
            tuple(self.characters[i] for i in keep),
            tuple(self.scripts[i] for i in keep),
        )


def find_dejavu_fonts(folders: Sequence[str | Path] | None = None) -> list[Path]:
    """The DejaVu text fonts (not the maths font) found in the usual system font folders.

    Args:
        folders: where to look (recursively); default :data:`FONT_FOLDERS`.

    Raises:
        JiioError: when no DejaVu font is found, naming where it looked.
    """
    where = [Path(os.path.expanduser(str(f))) for f in (folders or FONT_FOLDERS)]
    found: dict[str, Path] = {}
    for folder in where:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("DejaVu*.ttf")):
            # The maths font has Latin and Greek only and draws them as italic maths symbols.
            if "Math" not in path.name:
                found.setdefault(path.name, path)
    if not found:
        raise JiioError(
            "no DejaVu fonts found in "
            + ", ".join(str(f) for f in where)
            + "; install them (e.g. the fonts-dejavu-core package) or use the shipped "
            "sample_data/glyphs.npz"
        )
    return [found[name] for name in sorted(found)]


def _has_glyph(font: ImageFont.FreeTypeFont, char: str, missing: np.ndarray) -> bool:
    mask = font.getmask(char)
    if mask.size[0] == 0 or mask.size[1] == 0:
        return False
    pixels = np.asarray(mask)
    return not (pixels.shape == missing.shape and bool((pixels == missing).all()))


def render_glyph(
    font: ImageFont.FreeTypeFont, char: str, size: int, jitter: np.ndarray | None = None
) -> np.ndarray:
    """Render one character, centred, as uint8 (size, size) with 255 = ink.

    The glyph is drawn on a 64×64 canvas, centred on its bounding box, then transformed by
    the affine map ``jitter`` (a 2×3 matrix acting on canvas coordinates centred at the
    middle; None for none) and downsampled with a box filter.
    """
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    left, top, right, bottom = font.getbbox(char)
    x = (CANVAS - (right - left)) / 2 - left
    y = (CANVAS - (bottom - top)) / 2 - top
    from PIL import ImageDraw

    ImageDraw.Draw(canvas).text((x, y), char, fill=255, font=font)
    if jitter is not None:
        # PIL wants the inverse map (output pixel -> input pixel) in absolute coordinates.
        c = CANVAS / 2
        full = np.vstack([jitter, [0.0, 0.0, 1.0]])
        shift = np.array([[1.0, 0.0, c], [0.0, 1.0, c], [0.0, 0.0, 1.0]])
        unshift = np.array([[1.0, 0.0, -c], [0.0, 1.0, -c], [0.0, 0.0, 1.0]])
        inverse = np.linalg.inv(shift @ full @ unshift)
        canvas = canvas.transform(
            canvas.size,
            Image.Transform.AFFINE,
            tuple(inverse[:2].reshape(-1)),
            resample=Image.Resampling.BILINEAR,
        )
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def random_jitter(rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A random 2×3 affine map: rotation ±12°, scale 0.85–1.1, shear ±0.15, shift ±3 px.

    Shifts are in 64-pixel canvas units (about ±1.3 px at 28×28); ``strength`` scales all
    four ranges.
    """
    angle = math.radians(rng.uniform(-JITTER_ROTATION, JITTER_ROTATION) * strength)
    scale = 1.0 + rng.uniform(*JITTER_SCALE) * strength
    shear = rng.uniform(-JITTER_SHEAR, JITTER_SHEAR) * strength
    shift = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, size=2) * strength
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = scale * rotation @ np.array([[1.0, shear], [0.0, 1.0]])
    return np.hstack([linear, shift[:, None]])


def _characters(script: str) -> list[str]:
    return [chr(c) for lo, hi in SCRIPTS[script] for c in range(lo, hi + 1)]


def render_glyph_set(
    fonts: Sequence[Path],
    scripts: Sequence[str],
    *,
    drawers: int = 20,
    size: int = 28,
    max_per_script: int = 60,
    min_fonts: int = 3,
    seed: int = 0,
) -> GlyphSet:
    """Render every character of ``scripts`` that at least ``min_fonts`` fonts draw.

    Drawer r of a character uses the r-th of its fonts (cycling) with its own jitter, drawn
    from a generator seeded by (seed, character, r), so a set is reproducible and adding a
    script does not change the others. Characters whose plain rendering (first font, no
    jitter) equals an earlier one are dropped: a duplicate shape under two labels would be
    label noise.

    Args:
        fonts: font files, e.g. :func:`find_dejavu_fonts`.
        scripts: alphabet names, keys of :data:`SCRIPTS`.
        drawers: R, renderings per character.
        size: S, side of the images.
        max_per_script: keep at most this many characters per script (in code-point order).
        min_fonts: skip characters drawn by fewer fonts.
        seed: seed of the jitter.

    Raises:
        UsageError: for an unknown script name or when nothing could be rendered.
    """
    unknown = [s for s in scripts if s not in SCRIPTS]
    if unknown:
        raise UsageError(f"unknown script(s) {', '.join(unknown)}; known: {', '.join(SCRIPTS)}")
    loaded = [ImageFont.truetype(str(f), _FONT_PIXELS) for f in fonts]
    missing = [np.asarray(font.getmask(_MISSING_PROBE)) for font in loaded]
    images: list[np.ndarray] = []
    chars: list[str] = []
    owners: list[str] = []
    seen: set[bytes] = set()
    for script in scripts:
        kept = 0
        for char in _characters(script):
            if kept >= max_per_script:
                break
            covering = [f for f, m in zip(loaded, missing, strict=True) if _has_glyph(f, char, m)]
            if len(covering) < min_fonts:
                continue
            key = render_glyph(covering[0], char, size).tobytes()
            if key in seen:
                continue
            seen.add(key)
            rows = []
            for r in range(drawers):
                rng = np.random.default_rng([seed, ord(char), r])
                rows.append(
                    render_glyph(covering[r % len(covering)], char, size, random_jitter(rng))
                )
            images.append(np.stack(rows))
            chars.append(char)
            owners.append(script)
            kept += 1
    if not images:
        raise UsageError("no glyph could be rendered for the requested scripts")
    return GlyphSet(np.stack(images), tuple(chars), tuple(owners))


def save_glyph_set(path: Path, glyphs: GlyphSet) -> None:
    """Write a glyph set as a compressed ``.npz`` (images, code points, script names)."""
    from jiio_cli.data.atomic import atomic_write

    def write(file: object) -> None:
        np.savez_compressed(
            file,  # type: ignore[arg-type]
            images=glyphs.images,
            codepoints=np.array([ord(c) for c in glyphs.characters], dtype=np.int32),
            scripts=np.array(glyphs.scripts),
        )

    atomic_write(path, write, "glyph set")  # type: ignore[arg-type]


def load_glyph_set(path: Path) -> GlyphSet:
    """Read a glyph set written by :func:`save_glyph_set`.

    Raises:
        JiioError: when the file is missing or is not a glyph set.
    """
    if not path.is_file():
        raise JiioError(f"glyph set {path} not found; run scripts/make_glyphs.py to render it")
    try:
        with np.load(path) as data:
            images = data["images"]
            chars = tuple(chr(int(c)) for c in data["codepoints"])
            scripts = tuple(str(s) for s in data["scripts"])
    except (OSError, KeyError, ValueError) as exc:
        raise JiioError(f"{path} is not a glyph set ({exc}); render it again") from None
    if images.ndim != 4 or images.dtype != np.uint8 or len(chars) != images.shape[0]:
        raise JiioError(f"{path} is not a glyph set: images must be uint8 (N, R, S, S)")
    return GlyphSet(images, chars, scripts)
