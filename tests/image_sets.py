"""Small image data sets written as a user would pass them (fresh random draws per call)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_blob_images(path: Path, count: int) -> Path:
    """Write ``count`` 12×12 grey images of one smooth Gaussian blob each as an npz.

    Image i is 255 · exp(−‖p − cᵢ‖² / 8) at pixel p, with its centre cᵢ drawn uniformly
    from [3, 9]²: easy for a small decoder to learn, never constant.
    """
    rng = np.random.default_rng()
    yy, xx = np.mgrid[0:12, 0:12]
    centres = rng.uniform(3, 9, size=(count, 2))
    blobs = np.exp(
        -((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2)
        / 8.0
    )
    np.savez(path, images=(blobs * 255).astype(np.uint8))
    return path
