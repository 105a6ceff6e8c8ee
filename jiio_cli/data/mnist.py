"""The shipped MNIST-5k subset (500 real digits per class) and its fixed train/held-out split.

For every class, the first 450 digits in file order are for training and the last 50 are
held out, giving 4,500 / 500 images. The split never changes, so held-out numbers from
different runs are comparable.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from jiio_cli.data.npz import NPZ_READ_ERRORS
from jiio_cli.data.paths import sample_data_dir
from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "HELDOUT_PER_CLASS",
    "MNIST5K_FILE",
    "SPLITS",
    "TRAIN_PER_CLASS",
    "load_mnist5k",
    "split_indices",
]

Split = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = ("train", "heldout", "all")
TRAIN_PER_CLASS = 450
HELDOUT_PER_CLASS = 50
MNIST5K_FILE = "mnist5k.npz"
_REGENERATE = "regenerate it with sample_data/make_sample_data.py"


def split_indices(labels: np.ndarray, split: Split) -> np.ndarray:
    """Indices of ``split``: per class, the last 50 (in file order) are held out.

    The indices are interleaved by class — the first image of every class, then the
    second of every class, and so on (classes in ascending order) — so that any prefix
    (``--max-images``, ``--max-train``, a first batch) is class-balanced; the file itself
    is sorted by class.

    Args:
        labels: int labels (N,) in file order.
        split: "train", "heldout" or "all".

    Returns:
        int64 indices in that interleaved order.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown MNIST-5k split {split!r}; use one of {', '.join(SPLITS)}")
    chosen = np.ones(labels.shape[0], dtype=bool)
    if split != "all":
        heldout = np.zeros(labels.shape[0], dtype=bool)
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            heldout[members[-HELDOUT_PER_CLASS:]] = True
        chosen = heldout if split == "heldout" else ~heldout
    index = np.flatnonzero(chosen)
    rank = np.zeros(index.shape[0], dtype=np.int64)
    for cls in np.unique(labels[index]):
        members = labels[index] == cls
        rank[members] = np.arange(int(members.sum()))
    # Sort by (rank within class, class); lexsort's last key is the primary one.
    return index[np.lexsort((labels[index], rank))].astype(np.int64)


@functools.lru_cache(maxsize=1)
def _load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The raw uint8 arrays, read once per process (about 4 MB)."""
    if not path.is_file():
        raise JiioError(f"MNIST-5k file {path} is missing; {_REGENERATE}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (KeyError, *NPZ_READ_ERRORS) as exc:
        raise JiioError(f"MNIST-5k file {path} is damaged ({exc}); {_REGENERATE}") from exc
    expected = 10 * (TRAIN_PER_CLASS + HELDOUT_PER_CLASS)
    if images.shape != (expected, 28, 28) or labels.shape != (expected,):
        raise JiioError(
            f"MNIST-5k file {path} holds shapes {images.shape} and {labels.shape}, not "
            f"({expected}, 28, 28) and ({expected},); {_REGENERATE}"
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_mnist5k(split: Split = "all") -> tuple[Tensor, Tensor]:
    """Load the shipped MNIST-5k digits.

    Args:
        split: "train" (4,500: the first 450 of each class), "heldout" (500: the last 50
            of each class) or "all" (5,000), interleaved by class (see
            :func:`split_indices`), so that every prefix is class-balanced.

    Returns:
        float32 images (N, 1, 28, 28) in [0, 1] and int64 labels (N,), freshly allocated.

    Raises:
        UsageError: an unknown split.
        JiioError: the sample data is missing or damaged.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown MNIST-5k split {split!r}; use one of {', '.join(SPLITS)}")
    images, labels = _load_arrays(sample_data_dir() / MNIST5K_FILE)
    index = split_indices(labels, split)
    x = torch.from_numpy(images[index].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels[index].astype(np.int64))
    return x, y
