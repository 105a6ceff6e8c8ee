"""Tiny Omniglot-like data written on the fly: folders and zip archives of PNG drawings.

Each character is a distinct stroke pattern (its own bars at character-specific places),
drawn by several drawers with a small drawer-specific shift, as black ink on white paper
at 35×35, in Omniglot's naming ``<id>_<drawer>.png``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 35


def drawing(alphabet: int, character: int, drawer: int) -> np.ndarray:
    """uint8 (35, 35): white paper, black strokes characteristic of the character."""
    pixels = np.full((SIDE, SIDE), 255, np.uint8)
    rng = np.random.default_rng(1000 * alphabet + character)
    dy, dx = drawer % 3 - 1, (drawer // 3) % 3 - 1
    for _ in range(3):
        horizontal = bool(rng.integers(2))
        a, b = (int(v) for v in rng.integers(6, SIDE - 12, size=2))
        if horizontal:
            pixels[a + dy : a + dy + 3, b + dx : b + dx + 10] = 0
        else:
            pixels[a + dy : a + dy + 10, b + dx : b + dx + 3] = 0
    return pixels


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def layout(alphabets: dict[str, int], drawers: range = range(1, 7)) -> dict[str, bytes]:
    """``alphabet/characterNN/<id>_<drawer>.png`` → PNG bytes for each alphabet's count."""
    files = {}
    for a, (alphabet, count) in enumerate(sorted(alphabets.items())):
        for c in range(count):
            for d in drawers:
                name = f"{alphabet}/character{c + 1:02d}/{a:02d}{c:02d}_{d:02d}.png"
                files[name] = png_bytes(drawing(a, c, d))
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_zip(path: Path, top: str, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{top}/{name}", data)
    return path
