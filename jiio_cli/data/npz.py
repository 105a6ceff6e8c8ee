"""What reading a damaged ``.npz`` archive can raise."""

from __future__ import annotations

import zipfile
import zlib

__all__ = ["NPZ_READ_ERRORS"]

# np.load hands a damaged zip archive to zipfile and zlib, which are not picky about the
# exception types they raise; a reader turns any of these into one line for the user.
NPZ_READ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    zipfile.BadZipFile,
    zlib.error,
)
