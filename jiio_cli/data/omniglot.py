"""Omniglot as it comes: archives or folders of ``alphabet/character/<id>_<drawer>.png``.

Sources (one or several) are zip archives, folders in Omniglot's layout, or folders that
hold such archives/folders (e.g. the directory with ``images_background_small1.zip`` and
``images_background_small2.zip``). A character found in several sources (same alphabet
and character folder name) is one class; the same drawer's drawing found twice is kept
once. Omniglot names its files ``<character id>_<drawer>.png`` with drawers 01–20; the
drawer index is kept with every drawing, so that episodes can take support and queries
from different drawers (Lake et al.'s one-shot protocol). Files not named that way get
their rank in the sorted folder as drawer.

Every drawing is *normalised* the same way for training and for ``jiio adapt``'s folders
(:func:`normalise_drawing`): greyscale in [0, 1], polarity detected from the border
(strokes become 1 on a 0 background), then reduced to S×S, either whole (bilinear with
antialiasing) or cropped to the ink's bounding box first (``crop``: the box is made square
around its centre with a margin of :data:`CROP_MARGIN` of its side, so the character fills
the frame whatever the input's size or the drawer's placement; see :data:`CROP_OVERSAMPLING`).

The fixed split by alphabet (:data:`HELD_OUT_ALPHABETS`): Early_Aramaic and Tagalog
(22 + 17 = 39 characters in the archives) are never trained on; every other alphabet is
meta-training data. Rotations by 90°, 180° and 270° of a training character are extra
classes (alphabet ``<name>@90`` etc.), as in the usual Omniglot protocol.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from jiio_cli.data.images import IMAGE_SUFFIXES, read_image, resize_image
from jiio_cli.errors import UsageError

__all__ = [
    "CROP_MARGIN",
    "CROP_OVERSAMPLING",
    "HELD_OUT_ALPHABETS",
    "PREPROCESSING",
    "Drawing",
    "OmniglotCharacters",
    "ink_on_blank",
    "normalise_drawing",
    "read_omniglot",
    "with_rotations",
]

HELD_OUT_ALPHABETS = ("Early_Aramaic", "Tagalog")
"""Alphabets of the fixed meta-test split (never seen in training)."""

PREPROCESSING = ("resize", "crop")
"""How a drawing is reduced to S×S: whole, or cropped to its ink first."""

CROP_MARGIN = 0.1
"""Margin around the ink's square bounding box, as a fraction of its side."""

_DRAWER = re.compile(r"_(\d+)$")


@dataclass(frozen=True)
class Drawing:
    """One raw drawing before normalisation.

    Attributes:
        alphabet, character: its class (folder names).
        drawer: the drawer's index (from ``<id>_<drawer>.png``), or its file's rank.
        image: float32 (1, H, W) greyscale in [0, 1] as stored (any polarity).
        source: where it was read, for messages.
    """

    alphabet: str
    character: str
    drawer: int
    image: Tensor
    source: str


@dataclass(frozen=True)
class OmniglotCharacters:
    """Normalised characters grouped by class.

    Attributes:
        images: per class, float32 (n_c, 1, S, S) in [0, 1], ink = 1.
        drawers: per class, int64 (n_c,) drawer indices, all different within a class.
        characters: ``alphabet/character`` per class.
        alphabets: the alphabet of each class.
    """

    images: tuple[Tensor, ...]
    drawers: tuple[Tensor, ...]
    characters: tuple[str, ...]
    alphabets: tuple[str, ...]

    def select(self, keep: Iterable[int]) -> OmniglotCharacters:
        """The classes at the given indices, in that order."""
        idx = list(keep)
        return OmniglotCharacters(
            tuple(self.images[i] for i in idx),
            tuple(self.drawers[i] for i in idx),
            tuple(self.characters[i] for i in idx),
            tuple(self.alphabets[i] for i in idx),
        )

    def split_held_out(
        self, held_out: Sequence[str] = HELD_OUT_ALPHABETS
    ) -> tuple[OmniglotCharacters, OmniglotCharacters]:
        """(training, held-out) classes by alphabet (see :data:`HELD_OUT_ALPHABETS`)."""
        test = [i for i, a in enumerate(self.alphabets) if a in held_out]
        train = [i for i, a in enumerate(self.alphabets) if a not in held_out]
        return self.select(train), self.select(test)


def ink_on_blank(img: Tensor) -> Tensor:
    """Strokes 1 on a 0 background: invert an image (…, H, W) whose border is mostly bright.

    The border (outermost rows and columns) is background in a drawing of a character,
    whatever its polarity; a mean above 0.5 means light paper and dark ink.
    """
    border = torch.cat([img[..., 0, :], img[..., -1, :], img[..., :, 0], img[..., :, -1]], -1)
    return 1.0 - img if float(border.mean()) > 0.5 else img


def _ink_box(img: Tensor) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the pixels above half intensity of (1, H, W), or None."""
    ink = img[0] > 0.5
    if not bool(ink.any()):
        return None
    rows = torch.nonzero(ink.any(dim=1)).flatten()
    cols = torch.nonzero(ink.any(dim=0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


CROP_OVERSAMPLING = 4
"""The crop window is cut from the image resized so that the window spans this many
times the output side: the window's position and size are then rounded to a quarter of
an output pixel, so a drawing and a scaled copy of it give nearly the same result."""


def _crop_to_ink(img: Tensor, size: int) -> Tensor:
    """The square window around the ink's bounding box, with a margin, reduced to
    (1, S, S); pixels outside the image are background (0). A blank image is reduced
    whole."""
    box = _ink_box(img)
    if box is None:
        return resize_image(img, size)
    top, bottom, left, right = box
    side = max(bottom - top, right - left) * (1 + 2 * CROP_MARGIN)
    height, width = img.shape[-2:]
    factor = CROP_OVERSAMPLING * size / side
    scaled_h, scaled_w = max(1, round(height * factor)), max(1, round(width * factor))
    scaled = resize_image(img, (scaled_h, scaled_w))
    fy, fx = scaled_h / height, scaled_w / width
    window = max(1, round(side * (fy + fx) / 2))
    # Pixel-edge coordinates: the box's centre is the mean of its edges.
    y0 = round((top + bottom) / 2 * fy - window / 2)
    x0 = round((left + right) / 2 * fx - window / 2)
    out = img.new_zeros(1, window, window)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + window, scaled_h), min(x0 + window, scaled_w)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = scaled[:, sy0:sy1, sx0:sx1]
    return resize_image(out, size)


def normalise_drawing(img: Tensor, size: int, preprocess: str = "crop") -> Tensor:
    """A drawing (1, H, W) of any size and polarity → (1, S, S), strokes 1, in [0, 1].

    Args:
        img: greyscale in [0, 1].
        size: S.
        preprocess: ``resize`` (the whole image, antialiased) or ``crop`` (to the ink's
            square bounding box with a margin, then antialiased).
    """
    if preprocess not in PREPROCESSING:
        raise ValueError(f"preprocess must be one of {PREPROCESSING}, got {preprocess!r}")
    img = ink_on_blank(img)
    if preprocess == "crop":
        return _crop_to_ink(img, size).clamp(0, 1)
    return resize_image(img, size).clamp(0, 1)


def _drawer_of(stem: str) -> int | None:
    match = _DRAWER.search(stem)
    return int(match.group(1)) if match else None


def _decode(data: bytes, where: str) -> Tensor:
    try:
        with Image.open(io.BytesIO(data)) as pil:
            grey = pil.convert("L")
            return (
                torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8)
                .view(1, grey.height, grey.width)
                .float()
                / 255.0
            )
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UsageError(f"cannot read the image {where}: {exc}") from None


def _from_zip(path: Path) -> list[tuple[str, str, str, Tensor, str]]:
    """(alphabet, character, file stem, image, where) of every image in an archive."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"--data {path} is not a readable zip archive: {exc}") from None
    out = []
    with archive:
        for name in sorted(archive.namelist()):
            parts = PurePosixPath(name).parts
            if (
                len(parts) < 3
                or PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES
                or any(p.startswith(".") or p == "__MACOSX" for p in parts)
            ):
                continue
            where = f"{path}:{name}"
            image = _decode(archive.read(name), where)
            out.append((parts[-3], parts[-2], PurePosixPath(name).stem, image, where))
    return out


def _from_folder(root: Path) -> list[tuple[str, str, str, Tensor, str]]:
    """(alphabet, character, file stem, image, where) of every ``alphabet/character/*``."""
    out = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).parts
        if (
            not file.is_file()
            or file.suffix.lower() not in IMAGE_SUFFIXES
            or any(p.startswith(".") for p in rel)
        ):
            continue
        if len(rel) < 3 and file.parent == root:
            continue
        image = read_image(file, channels=1)[0]
        out.append((file.parent.parent.name, file.parent.name, file.stem, image, str(file)))
    return out


def _expand(sources: Sequence[Path]) -> list[Path]:
    """Archives and layout folders: a folder holding archives stands for them (and for any
    alphabet folders beside them)."""
    expanded: list[Path] = []
    for source in sources:
        if not source.exists():
            raise UsageError(f"--data {source} does not exist")
        if source.is_dir():
            zips = sorted(p for p in source.iterdir() if p.suffix.lower() == ".zip")
            expanded.extend(zips)
            if not zips or any(p.is_dir() and not p.name.startswith(".") for p in source.iterdir()):
                expanded.append(source)
        elif source.suffix.lower() == ".zip":
            expanded.append(source)
        else:
            raise UsageError(
                f"--data {source} is neither a zip archive nor a folder; give Omniglot's "
                "archives or a folder of alphabet/character/*.png"
            )
    return expanded


def read_omniglot(sources: Sequence[Path]) -> list[Drawing]:
    """Every drawing of the sources, duplicates (same alphabet, character, drawer) merged.

    Raises:
        UsageError: a source is missing, unreadable, or no drawing is found.
    """
    seen: dict[tuple[str, str, int], Drawing] = {}
    per_class_rank: dict[tuple[str, str], int] = {}
    for source in _expand(sources):
        found = _from_zip(source) if source.is_file() else _from_folder(source)
        for alphabet, character, stem, image, where in found:
            drawer = _drawer_of(stem)
            if drawer is None:
                # No drawer in the name: each such file is a drawer of its own.
                rank = per_class_rank.get((alphabet, character), 0)
                per_class_rank[(alphabet, character)] = rank + 1
                drawer = 1000 + rank
            key = (alphabet, character, drawer)
            if key not in seen:
                seen[key] = Drawing(alphabet, character, drawer, image, where)
    if not seen:
        names = ", ".join(str(s) for s in sources)
        raise UsageError(
            f"--data {names} holds no drawings; expected alphabet/character/*.png as in Omniglot"
        )
    return [seen[k] for k in sorted(seen)]


def normalised_characters(
    drawings: Sequence[Drawing], size: int, preprocess: str = "crop"
) -> OmniglotCharacters:
    """Group drawings by class (sorted by alphabet, then character) and normalise them."""
    groups: dict[tuple[str, str], list[Drawing]] = {}
    for d in drawings:
        groups.setdefault((d.alphabet, d.character), []).append(d)
    images, drawers, names, alphabets = [], [], [], []
    for (alphabet, character), group in sorted(groups.items()):
        group = sorted(group, key=lambda d: d.drawer)
        images.append(torch.stack([normalise_drawing(d.image, size, preprocess) for d in group]))
        drawers.append(torch.tensor([d.drawer for d in group], dtype=torch.long))
        names.append(f"{alphabet}/{character}")
        alphabets.append(alphabet)
    return OmniglotCharacters(tuple(images), tuple(drawers), tuple(names), tuple(alphabets))


def with_rotations(characters: OmniglotCharacters) -> OmniglotCharacters:
    """Each class followed by its rotations by 90°, 180° and 270° as classes of their own
    (same drawers; alphabet and name suffixed ``@90`` etc.)."""
    images, drawers, names, alphabets = [], [], [], []
    for x, d, n, a in zip(
        characters.images,
        characters.drawers,
        characters.characters,
        characters.alphabets,
        strict=True,
    ):
        for quarter in range(4):
            suffix = "" if quarter == 0 else f"@{90 * quarter}"
            images.append(torch.rot90(x, quarter, dims=(-2, -1)).contiguous())
            drawers.append(d)
            names.append(n + suffix)
            alphabets.append(a + suffix)
    return OmniglotCharacters(tuple(images), tuple(drawers), tuple(names), tuple(alphabets))
