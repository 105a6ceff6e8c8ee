"""Atomic file writes: readers see the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from jiio_cli.errors import JiioError, UsageError

__all__ = ["atomic_write"]


def _new_temp_file(folder: Path, name: str) -> Path:
    """Create an empty hidden temporary file next to the target, honouring the umask."""
    while True:
        candidate = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate


def atomic_write(path: Path | str, write: Callable[[BinaryIO], None], what: str) -> Path:
    """Write ``path`` through ``write(file)`` via a temporary file and an atomic rename.

    Missing parent folders are created. The temporary file lives in the target's folder (a
    rename is only atomic within one file system) and is removed if anything fails.

    Args:
        path: the file to create or replace.
        write: called once with a binary file open for writing.
        what: what the file is, for messages (e.g. ``"image"``).

    Raises:
        UsageError: when ``path`` is an existing directory.
        JiioError: when the file cannot be written (permissions, full disk).
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} path {path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = _new_temp_file(path.parent, path.name)
        try:
            with open(temp, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise JiioError(
            f"cannot write {what} {path}: {reason}; check free disk space and permissions"
        ) from exc
    return path
