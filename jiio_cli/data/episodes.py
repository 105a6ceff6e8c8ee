"""Few-shot classification data: pools of classes and N-way K-shot episodes drawn from them.

A :class:`ClassPool` holds, for each class, its images as float32 (n_c, 1, S, S) in [0, 1]
with 1 = ink on a 0 background (Omniglot's PNGs are black strokes on white; they are
inverted when read). Pools come from a rendered :class:`~jiio_cli.data.glyphs.GlyphSet` or
from a folder in Omniglot's layout (``alphabet/character/*.png``).

An episode batch holds B independent tasks: for each, N classes drawn without replacement,
then K support and Q query images per class drawn without replacement from the class's
images. Labels 0..N−1 follow a random order of the drawn classes, so no label means the
same class twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from jiio_cli.data.glyphs import (
    META_TEST_SCRIPTS,
    META_TRAIN_SCRIPTS,
    GlyphSet,
    find_dejavu_fonts,
    load_glyph_set,
    render_glyph_set,
)
from jiio_cli.data.images import IMAGE_SUFFIXES, read_image, resize_image
from jiio_cli.data.paths import sample_data_dir
from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "ClassPool",
    "EpisodeBatch",
    "check_episode_shape",
    "load_class_folders",
    "load_glyph_pool",
    "load_omniglot_folder",
    "load_query_folder",
    "pool_from_glyphs",
    "sample_episodes",
]


@dataclass(frozen=True)
class ClassPool:
    """Images grouped by class.

    Attributes:
        images: per class, float32 (n_c, 1, S, S) in [0, 1], ink = 1.
        names: class names (a character, or ``alphabet/character``).
        alphabets: the alphabet of each class.
    """

    images: tuple[Tensor, ...]
    names: tuple[str, ...]
    alphabets: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images[0].shape[-1])

    def min_per_class(self) -> int:
        return min(int(x.shape[0]) for x in self.images)

    def resized(self, size: int) -> ClassPool:
        """The same pool with S×S images."""
        if size == self.image_size:
            return self
        return ClassPool(
            tuple(resize_image(x, size).clamp(0, 1) for x in self.images),
            self.names,
            self.alphabets,
        )


@dataclass(frozen=True)
class EpisodeBatch:
    """B tasks of N ways with K shots and Q queries per class.

    Attributes:
        support: (B, N·K, 1, S, S); support_labels: (B, N·K) in 0..N−1.
        query: (B, N·Q, 1, S, S); query_labels: (B, N·Q).
        ways: N.
    """

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor
    ways: int

    def to(self, device: torch.device) -> EpisodeBatch:
        return EpisodeBatch(
            self.support.to(device),
            self.support_labels.to(device),
            self.query.to(device),
            self.query_labels.to(device),
            self.ways,
        )


def pool_from_glyphs(glyphs: GlyphSet) -> ClassPool:
    """A pool whose classes are the characters of a glyph set (drawers = images)."""
    images = torch.from_numpy(glyphs.images).float().div(255.0).unsqueeze(2)
    return ClassPool(tuple(images.unbind(0)), glyphs.characters, glyphs.scripts)


def load_glyph_pool(split: str, path: Path | None = None) -> ClassPool:
    """The glyph tasks of one split: ``"train"`` (meta-train) or ``"test"`` (meta-test).

    Read from ``path`` (default: the shipped ``sample_data/glyphs.npz``); when the default
    file is absent they are rendered from the machine's DejaVu fonts instead.
    """
    scripts = META_TRAIN_SCRIPTS if split == "train" else META_TEST_SCRIPTS
    if path is None:
        try:
            default = sample_data_dir() / "glyphs.npz"
        except JiioError:
            default = None
        if default is not None and default.is_file():
            glyphs = load_glyph_set(default).select(scripts)
        else:
            glyphs = render_glyph_set(find_dejavu_fonts(), scripts)
    else:
        glyphs = load_glyph_set(path).select(scripts)
    return pool_from_glyphs(glyphs)


def _ink_on_blank(img: Tensor) -> Tensor:
    """Make ink 1 and background 0: invert images whose border is mostly bright."""
    border = torch.cat([img[..., 0, :], img[..., -1, :], img[..., :, 0], img[..., :, -1]], -1)
    return 1.0 - img if float(border.mean()) > 0.5 else img


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _wxh(img: Tensor) -> str:
    return f"{img.shape[-1]}x{img.shape[-2]}"


def _read_same_size(files: list[Path], what: str) -> list[Tensor]:
    """Read greyscale images and insist that all have one size (one line if not)."""
    images = [read_image(p, channels=1)[0] for p in files]
    sizes = {tuple(x.shape[-2:]) for x in images}
    if len(sizes) > 1:
        k = next(i for i, x in enumerate(images) if x.shape[-2:] != images[0].shape[-2:])
        raise UsageError(
            f"{what} mixes image sizes: {files[0]} is {_wxh(images[0])} but {files[k]} is "
            f"{_wxh(images[k])}; give images of one size"
        )
    return images


def load_class_folders(
    root: Path, image_size: int, what: str, *, allow_empty_classes: bool = False
) -> ClassPool:
    """One class per subfolder of ``root`` (sorted by name), images directly inside.

    Images are converted to greyscale, made ink-on-blank and resized to S×S. All images
    under ``root`` must have one size.

    Raises:
        UsageError: ``root`` is missing or not a folder, holds no class folders, a class
            folder holds no image (unless ``allow_empty_classes``), or sizes are mixed.
    """
    if not root.exists():
        raise UsageError(f"{what} folder {root} does not exist")
    if not root.is_dir():
        raise UsageError(
            f"{what} {root} is not a folder; give a folder with one subfolder per class"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UsageError(
            f"{what} folder {root} has no class subfolders; "
            "put each class's images in a subfolder of its own"
        )
    files = {f: _image_files(f) for f in folders}
    empty = [f for f in folders if not files[f]]
    if empty and not allow_empty_classes:
        raise UsageError(
            f"{what} class {empty[0].name!r} ({empty[0]}) has no images; add at least one"
        )
    folders = [f for f in folders if files[f]]
    flat = [p for f in folders for p in files[f]]
    images = _read_same_size(flat, f"{what} folder {root}")
    out: list[Tensor] = []
    start = 0
    for f in folders:
        batch = torch.stack(images[start : start + len(files[f])])
        start += len(files[f])
        out.append(resize_image(_ink_on_blank(batch), image_size).clamp(0, 1))
    return ClassPool(tuple(out), tuple(f.name for f in folders), tuple(root.name for _ in folders))


def load_query_folder(root: Path, image_size: int) -> tuple[Tensor, list[Path], list[str] | None]:
    """Query images: directly in ``root`` (unlabelled) or in one subfolder per class.

    Returns:
        images (m, 1, S, S) ink-on-blank, their files, and per image its class folder's
        name (None when the images are not in class folders).

    Raises:
        UsageError: missing folder, no image, images of mixed sizes.
    """
    if not root.is_dir():
        raise UsageError(f"query folder {root} does not exist or is not a folder")
    direct = _image_files(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    labelled = [(f, p) for f in folders for p in _image_files(f)]
    if direct and labelled:
        raise UsageError(
            f"query folder {root} mixes loose images and class subfolders; use one or the other"
        )
    if not direct and not labelled:
        raise UsageError(f"query folder {root} is empty; add the images to classify")
    files = direct or [p for _, p in labelled]
    names = None if direct else [f.name for f, _ in labelled]
    images = torch.stack(_read_same_size(files, f"query folder {root}"))
    images = torch.stack([_ink_on_blank(x) for x in images])
    return resize_image(images, image_size).clamp(0, 1), files, names


def load_omniglot_folder(root: Path, image_size: int) -> ClassPool:
    """A folder in Omniglot's layout: ``alphabet/character/*.png`` (any depth above it).

    Every folder that directly holds images is a class named ``alphabet/character`` after
    its parent and itself. Omniglot's 105×105 black-on-white PNGs become ink-on-blank S×S
    images (area-averaged).

    Raises:
        UsageError: missing folder, no class found, or images of mixed sizes in one class.
    """
    if not root.is_dir():
        raise UsageError(f"--data {root} is not a folder; give a folder in Omniglot's layout")
    classes = sorted({p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES})
    classes = [c for c in classes if not any(s.startswith(".") for s in c.relative_to(root).parts)]
    if not classes:
        raise UsageError(
            f"--data {root} holds no images; expected alphabet/character/*.png as in Omniglot"
        )
    images, names, alphabets = [], [], []
    for folder in classes:
        batch = torch.stack(_read_same_size(_image_files(folder), f"class folder {folder}"))
        images.append(resize_image(_ink_on_blank(batch), image_size).clamp(0, 1))
        names.append(f"{folder.parent.name}/{folder.name}")
        alphabets.append(folder.parent.name)
    return ClassPool(tuple(images), tuple(names), tuple(alphabets))


def check_episode_shape(pool: ClassPool, ways: int, shots: int, queries: int, what: str) -> None:
    """Raise a one-line UsageError when the pool cannot supply such episodes."""
    if ways < 2 or shots < 1 or queries < 0:
        raise UsageError(
            f"need --ways >= 2, --shots >= 1 and --queries >= 0 (got {ways}, {shots}, {queries})"
        )
    if ways > pool.num_classes:
        raise UsageError(
            f"--ways {ways} is more than the {pool.num_classes} classes of {what}; "
            f"use --ways {pool.num_classes} or fewer"
        )
    need = shots + queries
    small = [n for n, x in zip(pool.names, pool.images, strict=True) if x.shape[0] < need]
    if len(small) > pool.num_classes - ways:
        raise UsageError(
            f"{what}: episodes need {need} images per class (--shots {shots} + --queries "
            f"{queries}) but {len(small)} classes (e.g. {small[0]!r}) have fewer"
        )


def sample_episodes(
    pool: ClassPool,
    batch: int,
    ways: int,
    shots: int,
    queries: int,
    generator: torch.Generator,
) -> EpisodeBatch:
    """Draw ``batch`` independent N-way K-shot tasks with Q queries per class.

    Only classes with at least K + Q images are drawn. All randomness comes from
    ``generator`` (a CPU generator), so an episode batch is a function of its seed.
    """
    need = shots + queries
    eligible = [c for c, x in enumerate(pool.images) if x.shape[0] >= need]
    if len(eligible) < ways:
        raise UsageError(
            f"only {len(eligible)} classes have {need} images; cannot draw {ways}-way episodes"
        )
    eligible_t = torch.tensor(eligible)
    supports, queries_, s_labels, q_labels = [], [], [], []
    for _ in range(batch):
        chosen = eligible_t[torch.randperm(len(eligible), generator=generator)[:ways]]
        s_rows, q_rows = [], []
        for c in chosen.tolist():
            images = pool.images[c]
            pick = torch.randperm(images.shape[0], generator=generator)[:need]
            s_rows.append(images[pick[:shots]])
            q_rows.append(images[pick[shots:]])
        supports.append(torch.cat(s_rows))
        queries_.append(torch.cat(q_rows) if queries else torch.zeros(0, *pool.images[0].shape[1:]))
        s_labels.append(torch.arange(ways).repeat_interleave(shots))
        q_labels.append(torch.arange(ways).repeat_interleave(queries))
    return EpisodeBatch(
        torch.stack(supports),
        torch.stack(s_labels),
        torch.stack(queries_),
        torch.stack(q_labels),
        ways,
    )
