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

from collections.abc import Callable, Sequence
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
from jiio_cli.data.omniglot import (
    OmniglotCharacters,
    normalise_drawing,
    normalised_characters,
    read_omniglot,
)
from jiio_cli.data.paths import sample_data_dir
from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "EPISODE_KINDS",
    "ClassPool",
    "EpisodeBatch",
    "check_episode_shape",
    "draw_episodes",
    "load_class_folders",
    "load_glyph_pool",
    "load_omniglot_folder",
    "load_query_folder",
    "pool_from_characters",
    "pool_from_glyphs",
]

EPISODE_KINDS = ("across", "within")
"""``across``: N classes drawn from the whole pool; ``within``: N classes of one alphabet,
support and queries from disjoint sets of drawers (Lake et al.'s one-shot protocol)."""


@dataclass(frozen=True)
class ClassPool:
    """Images grouped by class.

    Attributes:
        images: per class, float32 (n_c, 1, S, S) in [0, 1], ink = 1.
        names: class names (a character, or ``alphabet/character``).
        alphabets: the alphabet of each class.
        drawers: per class, int64 (n_c,) the drawer of each image (all different within
            a class), or None when unknown (rendered glyphs: image i is drawer i).
    """

    images: tuple[Tensor, ...]
    names: tuple[str, ...]
    alphabets: tuple[str, ...]
    drawers: tuple[Tensor, ...] | None = None

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
            self.drawers,
        )

    def drawers_of(self, c: int) -> Tensor:
        """Drawer indices (n_c,) of class c (0..n_c−1 when unknown)."""
        if self.drawers is None:
            return torch.arange(self.images[c].shape[0])
        return self.drawers[c]

    def select(self, keep: list[int]) -> ClassPool:
        """The classes at the given indices, in that order."""
        return ClassPool(
            tuple(self.images[i] for i in keep),
            tuple(self.names[i] for i in keep),
            tuple(self.alphabets[i] for i in keep),
            None if self.drawers is None else tuple(self.drawers[i] for i in keep),
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


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _read_normalised(files: list[Path], size: int, preprocess: str) -> Tensor:
    """Drawings of any size and polarity → (n, 1, S, S), strokes 1 (see
    :func:`~jiio_cli.data.omniglot.normalise_drawing`)."""
    return torch.stack(
        [normalise_drawing(read_image(p, channels=1)[0], size, preprocess) for p in files]
    )


def load_class_folders(
    root: Path,
    image_size: int,
    what: str,
    *,
    allow_empty_classes: bool = False,
    preprocess: str = "resize",
) -> ClassPool:
    """One class per subfolder of ``root`` (sorted by name), images directly inside.

    Each image, of any size and polarity, is converted to greyscale, made ink-on-blank
    and reduced to S×S by ``preprocess`` (see
    :func:`~jiio_cli.data.omniglot.normalise_drawing`).

    Raises:
        UsageError: ``root`` is missing or not a folder, holds no class folders, or a
            class folder holds no image (unless ``allow_empty_classes``).
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
    out = [_read_normalised(files[f], image_size, preprocess) for f in folders]
    return ClassPool(tuple(out), tuple(f.name for f in folders), tuple(root.name for _ in folders))


def load_query_folder(
    root: Path, image_size: int, preprocess: str = "resize"
) -> tuple[Tensor, list[Path], list[str] | None]:
    """Query images: directly in ``root`` (unlabelled) or in one subfolder per class,
    normalised as :func:`load_class_folders` does.

    Returns:
        images (m, 1, S, S) ink-on-blank, their files, and per image its class folder's
        name (None when the images are not in class folders).

    Raises:
        UsageError: missing folder, or no image.
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
    return _read_normalised(files, image_size, preprocess), files, names


def pool_from_characters(characters: OmniglotCharacters) -> ClassPool:
    """A pool of Omniglot characters (see :mod:`jiio_cli.data.omniglot`), drawers kept."""
    return ClassPool(
        characters.images, characters.characters, characters.alphabets, characters.drawers
    )


def load_omniglot_folder(
    root: Path | Sequence[Path], image_size: int, preprocess: str = "resize"
) -> ClassPool:
    """All characters of Omniglot sources (archives or ``alphabet/character/*.png``
    folders, one or several), duplicates merged, normalised to S×S ink-on-blank images
    (see :func:`~jiio_cli.data.omniglot.normalise_drawing`).

    Raises:
        UsageError: a missing or unreadable source, or no drawing found.
    """
    sources = [root] if isinstance(root, Path) else list(root)
    return pool_from_characters(
        normalised_characters(read_omniglot(sources), image_size, preprocess)
    )


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


def _episode_batch(tasks: list[list[Tensor]], shots: int) -> EpisodeBatch:
    """Stack drawn tasks into a batch: ``tasks[b][k]`` holds the K + Q images (K + Q, c, S, S)
    of class k of task b, its K support images first; labels are the class positions k."""
    ways = len(tasks[0])
    per_class = tasks[0][0].shape[0]
    support = torch.stack([torch.cat([x[:shots] for x in rows]) for rows in tasks])
    query = torch.stack([torch.cat([x[shots:] for x in rows]) for rows in tasks])
    labels = torch.arange(ways)
    return EpisodeBatch(
        support,
        labels.repeat_interleave(shots).expand(len(tasks), -1).clone(),
        query,
        labels.repeat_interleave(per_class - shots).expand(len(tasks), -1).clone(),
        ways,
    )


TaskPicker = Callable[[torch.Generator], list[Tensor]]
"""Draws one task: per class k of its N, the K + Q images (K + Q, c, S, S), support first."""


def _across_picker(pool: ClassPool, ways: int, need: int) -> TaskPicker:
    """Tasks of N classes drawn uniformly among those with at least ``need`` = K + Q images,
    then K + Q distinct images of each.

    Raises:
        UsageError: fewer than N classes have K + Q images.
    """
    eligible = [c for c, x in enumerate(pool.images) if x.shape[0] >= need]
    if len(eligible) < ways:
        raise UsageError(
            f"only {len(eligible)} classes have {need} images; cannot draw {ways}-way episodes"
        )
    eligible_t = torch.tensor(eligible)

    def pick(generator: torch.Generator) -> list[Tensor]:
        chosen = eligible_t[torch.randperm(len(eligible), generator=generator)[:ways]]
        rows = []
        for c in chosen.tolist():
            images = pool.images[c]
            rows.append(images[torch.randperm(images.shape[0], generator=generator)[:need]])
        return rows

    return pick


def within_alphabet_groups(pool: ClassPool, ways: int, need: int) -> list[list[int]]:
    """Per alphabet with at least ``ways`` classes of ``need`` images, its class indices."""
    groups: dict[str, list[int]] = {}
    for c, (alphabet, x) in enumerate(zip(pool.alphabets, pool.images, strict=True)):
        if x.shape[0] >= need:
            groups.setdefault(alphabet, []).append(c)
    return [g for _, g in sorted(groups.items()) if len(g) >= ways]


def _within_alphabet_picker(pool: ClassPool, ways: int, need: int) -> TaskPicker:
    """Tasks of one alphabet each, drawers disjoint between support and queries.

    Per task: an alphabet uniformly among those with at least N eligible classes, N of its
    classes, then K + Q distinct drawers among those that drew all N classes; class k's
    support images are its drawings by the first K drawers, its queries those by the
    other Q. No drawer appears in both the support set and the queries, and no task mixes
    alphabets.

    Raises:
        UsageError: no alphabet has N classes, or (when a task is drawn) the drawn classes
            share fewer than K + Q drawers.
    """
    groups = within_alphabet_groups(pool, ways, need)
    if not groups:
        raise UsageError(
            f"no alphabet has {ways} classes with {need} images each; within-alphabet "
            f"{ways}-way episodes need one (use fewer --ways)"
        )

    def pick(generator: torch.Generator) -> list[Tensor]:
        group = groups[int(torch.randint(len(groups), (1,), generator=generator))]
        order = torch.randperm(len(group), generator=generator)[:ways].tolist()
        chosen = [group[i] for i in order]
        common = set(pool.drawers_of(chosen[0]).tolist())
        for c in chosen[1:]:
            common &= set(pool.drawers_of(c).tolist())
        if len(common) < need:
            raise UsageError(
                f"classes of alphabet {pool.alphabets[chosen[0]]!r} share only {len(common)} "
                f"drawers; within-alphabet episodes need {need} (--shots + --queries)"
            )
        shared = torch.tensor(sorted(common))
        picked = shared[torch.randperm(len(shared), generator=generator)[:need]]
        rows = []
        for c in chosen:
            drawers = pool.drawers_of(c)
            # Position of each picked drawer among this class's drawings.
            where = (drawers[None, :] == picked[:, None]).float().argmax(dim=1)
            rows.append(pool.images[c][where])
        return rows

    return pick


def draw_episodes(
    pool: ClassPool,
    kind: str,
    batch: int,
    ways: int,
    shots: int,
    queries: int,
    generator: torch.Generator,
) -> EpisodeBatch:
    """Draw ``batch`` independent N-way K-shot tasks with Q queries per class, of one of
    :data:`EPISODE_KINDS`: ``across`` (N classes of the whole pool) or ``within`` (N classes
    of one alphabet, support and queries by disjoint drawers).

    Only classes with at least K + Q images are drawn. All randomness comes from
    ``generator`` (a CPU generator), so an episode batch is a function of its seed.

    Raises:
        UsageError: the pool cannot supply such episodes (too few classes, no alphabet
            with N classes, or too few shared drawers).
        ValueError: an unknown ``kind``.
    """
    need = shots + queries
    if kind == "within":
        pick = _within_alphabet_picker(pool, ways, need)
    elif kind == "across":
        pick = _across_picker(pool, ways, need)
    else:
        raise ValueError(f"episode kind must be one of {EPISODE_KINDS}, got {kind!r}")
    return _episode_batch([pick(generator) for _ in range(batch)], shots)
