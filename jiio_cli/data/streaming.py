"""Large image folders read on demand: only the file list lives in memory.

:class:`StreamingImageFolder` behaves like the (N, C, S, S) tensor that
:func:`~jiio_cli.data.datasets.load_image_dataset` would return for the same folder —
``len(images)``, ``images[index_tensor]``, ``images[a:b]`` — with the same pixels, but
reads, converts and resizes the requested files when asked, spread over worker
processes. Every training process (rank) keeps only paths, never the whole dataset.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jiio_cli.data.channels import check_channels
from jiio_cli.data.datasets import list_image_files
from jiio_cli.data.images import IMAGE_SUFFIXES, read_image, resize_image
from jiio_cli.errors import UsageError

__all__ = ["IN_MEMORY_LIMIT_BYTES", "StreamingImageFolder", "default_workers", "folder_bytes"]

IN_MEMORY_LIMIT_BYTES = 1 << 30
"""Folders whose decoded float32 tensor would exceed this are streamed, not loaded."""


def default_workers(processes_per_node: int = 1) -> int:
    """Decoding workers per training process: the node's cores shared out, at most 4."""
    cores = os.cpu_count() or 1
    return max(1, min(4, cores // max(processes_per_node, 1) - 1))


def folder_bytes(count: int, image_size: int, channels: int) -> int:
    """Bytes of ``count`` decoded float32 images (C, S, S)."""
    return count * channels * image_size * image_size * 4


def _read_one(path: str, channels: int, image_size: int) -> np.ndarray:
    """One file as float32 (C, S, S) in [0, 1], exactly as the in-memory loader makes it."""
    image, _ = read_image(path, channels)
    return resize_image(image, image_size).numpy()


def _quiet_worker() -> None:
    # Workers decode one image at a time; intra-op threads would only oversubscribe cores.
    torch.set_num_threads(1)


class StreamingImageFolder:
    """The images of a folder (recursively, sorted like the in-memory loader), read lazily.

    Args:
        root: the folder.
        image_size: side S of the square images returned.
        channels: 1 (greyscale) or 3 (RGB).
        workers: decoding processes (0: decode in this process).
        files: use these files instead of listing ``root`` (e.g. a split of it).
    """

    def __init__(
        self,
        root: Path | str,
        image_size: int,
        channels: int,
        workers: int = 0,
        files: list[Path] | None = None,
    ) -> None:
        check_channels(channels)
        self.root = Path(root)
        if files is None:
            files, _, _ = list_image_files(self.root)
            if not files:
                raise UsageError(
                    f"folder {self.root} contains no images; add "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))} files or give an .npz file"
                )
        self.files = [str(p) for p in files]
        self.image_size = image_size
        self.channels = channels
        self.workers = workers
        self._pool: Executor | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, S, S), like the tensor it stands in for."""
        return (len(self.files), self.channels, self.image_size, self.image_size)

    def subset(self, start: int, stop: int) -> StreamingImageFolder:
        """Files ``start:stop`` as a folder of their own (sharing no worker pool)."""
        return StreamingImageFolder(
            self.root,
            self.image_size,
            self.channels,
            self.workers,
            [Path(p) for p in self.files[start:stop]],
        )

    def __getitem__(self, key: Tensor | slice) -> Tensor:
        """Images (B, C, S, S) for an index tensor (B,) or a slice."""
        positions = (
            range(len(self.files))[key]
            if isinstance(key, slice)
            else [int(i) for i in key.reshape(-1).tolist()]
        )
        paths = [self.files[i] for i in positions]
        if not paths:
            return torch.empty(0, self.channels, self.image_size, self.image_size)
        arrays = self._map(paths)
        return torch.from_numpy(np.stack(arrays))

    def _map(self, paths: list[str]) -> list[np.ndarray]:
        if self.workers <= 0 or len(paths) == 1:
            return [_read_one(p, self.channels, self.image_size) for p in paths]
        if self._pool is None:
            # spawn, not fork: the parent may hold CUDA or NCCL state a fork would copy.
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_quiet_worker,
            )
        chunk = max(1, len(paths) // (4 * self.workers))
        channels = [self.channels] * len(paths)
        sizes = [self.image_size] * len(paths)
        return list(self._pool.map(_read_one, paths, channels, sizes, chunksize=chunk))

    def close(self) -> None:
        """Stop the worker processes (they restart on the next read)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self.close()
