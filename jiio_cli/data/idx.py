"""MNIST's IDX file format (optionally gzipped): a small big-endian header, then raw values.

Layout: two zero bytes, a type code, the number of dimensions d, then d big-endian uint32
sizes, then the values in C order. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from jiio_cli.errors import UsageError

__all__ = ["IDX_IMAGES_PATTERN", "find_idx_labels", "is_idx_images", "read_idx"]

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_IMAGES_PATTERN = re.compile(r"images[-.]idx3-ubyte(\.gz)?$", re.IGNORECASE)
"""Names of IDX image files: ``train-images-idx3-ubyte`` and the ``images.idx3`` variant."""


def is_idx_images(path: Path) -> bool:
    """Whether ``path`` is named like an IDX image file (``*-images-idx3-ubyte[.gz]``)."""
    return IDX_IMAGES_PATTERN.search(path.name) is not None


def find_idx_labels(images_path: Path) -> Path | None:
    """The labels file next to an IDX image file, gzipped or not, or None if there is none.

    ``t10k-images-idx3-ubyte.gz`` pairs with ``t10k-labels-idx1-ubyte`` or its ``.gz``.
    """
    match = IDX_IMAGES_PATTERN.search(images_path.name)
    if match is None:
        return None
    stem = images_path.name[: match.start()]
    separator = match.group(0)[len("images")]
    base = f"{stem}labels{separator}idx1-ubyte"
    for name in (base, base + ".gz"):
        candidate = images_path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise UsageError(f"IDX file {path} not found; check the path")
    try:
        with path.open("rb") as file:
            head = file.read(2)
        if head == b"\x1f\x8b":  # the gzip magic, whatever the file is called
            with gzip.open(path, "rb") as file:
                return file.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"cannot read IDX file {path} ({exc}); download it again") from exc


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-endian array of its stored shape.

    Raises:
        UsageError: the file is missing, not IDX, or shorter than its header says.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _DTYPES:
        raise UsageError(f"{path} is not an IDX file (bad header); give an MNIST-style IDX file")
    dtype, ndim = _DTYPES[data[2]], data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise UsageError(f"IDX file {path} is truncated inside its header; download it again")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - offset != count * dtype.itemsize:
        raise UsageError(
            f"IDX file {path} holds {len(data) - offset} bytes of values but its header "
            f"announces shape {shape}; the file is truncated or damaged, download it again"
        )
    values = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return values.reshape(shape).astype(dtype.newbyteorder("="))
