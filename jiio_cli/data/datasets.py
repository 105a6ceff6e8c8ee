"""Load a whole image dataset from a folder of images, an ``.npz`` archive or MNIST IDX files.

Whatever the source, the result is float32 images (N, C, S, S) in [0, 1] with C the requested
channel count and S the requested size, plus int64 labels (N,) when the source has them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jiio_cli.data.channels import check_channels, convert_channels
from jiio_cli.data.idx import find_idx_labels, is_idx_images, read_idx
from jiio_cli.data.images import IMAGE_SUFFIXES, read_image, resize_image
from jiio_cli.data.npz import NPZ_READ_ERRORS
from jiio_cli.errors import UsageError

__all__ = ["array_to_images", "list_image_files", "load_image_dataset"]

_IMAGE_KEYS = ("images", "x")
_LABEL_KEYS = ("labels", "y")
_CHANNEL_COUNTS = (1, 3, 4)
_ACCEPTED = "a folder of images, an .npz file or an MNIST *-images-idx3-ubyte[.gz] file"


def list_image_files(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files under ``root`` (recursively, sorted) and their class labels if any.

    Hidden files and folders (names starting with ``.``) are skipped. When every image sits
    inside a subfolder of ``root``, each top-level subfolder is a class: labels index the
    sorted subfolder names. Otherwise there are no labels.

    Returns:
        (files, labels or None, class names; empty without labels).
    """
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )
    relative = [p.relative_to(root).parts for p in files]
    if not files or any(len(parts) < 2 for parts in relative):
        return files, None, []
    classes = sorted({parts[0] for parts in relative})
    index = {name: k for k, name in enumerate(classes)}
    return files, [index[parts[0]] for parts in relative], classes


def _load_folder(root: Path, image_size: int, channels: int) -> tuple[Tensor, Tensor | None]:
    files, labels, _ = list_image_files(root)
    if not files:
        hint = (
            "; it holds MNIST IDX files, give the *-images-idx3-ubyte file instead"
            if any(is_idx_images(p) for p in root.iterdir())
            else f"; add {', '.join(sorted(IMAGE_SUFFIXES))} files or give an .npz file"
        )
        raise UsageError(f"folder {root} contains no images{hint}")
    images = [resize_image(read_image(p, channels)[0], image_size) for p in files]
    label_tensor = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return torch.stack(images), label_tensor


def _layout(shape: tuple[int, ...], source: str) -> str:
    """Axis order of an image array: "NHW", "NHWC" or "NCHW"."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        # Channels-last wins a tie: it is what NumPy, Pillow and most exporters produce.
        if shape[3] in _CHANNEL_COUNTS:
            return "NHWC"
        if shape[1] in _CHANNEL_COUNTS:
            return "NCHW"
    raise UsageError(
        f"images in {source} have shape {shape}; expected (N, H, W), (N, H, W, C) or "
        "(N, C, H, W) with C = 1, 3 or 4"
    )


def _scale(array: np.ndarray, source: str) -> np.ndarray:
    """Pixel values as float32 in [0, 1]: integers are 0..255, floats already 0..1."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise UsageError(
                f"integer pixels in {source} run from {low} to {high}; store them as uint8 "
                "0..255 or as floats in [0, 1]"
            )
        return array.astype(np.float32) / 255.0
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise UsageError(f"images in {source} contain NaN or infinite values; remove them")
        low, high = float(values.min()), float(values.max())
        # Float exports round-trip through 8 bits and back; allow that much slack.
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise UsageError(
                f"float pixels in {source} run from {low:g} to {high:g}; scale them to [0, 1] "
                "or store uint8 0..255"
            )
        return np.clip(values, 0.0, 1.0)
    raise UsageError(
        f"images in {source} have dtype {array.dtype}; store them as uint8 or float in [0, 1]"
    )


def array_to_images(array: np.ndarray, source: str) -> Tensor:
    """Convert an image array in any accepted layout to float32 (N, C, H, W) in [0, 1].

    Args:
        array: (N, H, W), (N, H, W, C) or (N, C, H, W), C in {1, 3, 4}; uint8 0..255 (or any
            integer type in that range), bool, or float in [0, 1].
        source: where the array came from, for messages.

    Raises:
        UsageError: for any other shape, dtype or value range, or an empty array.
    """
    layout = _layout(tuple(array.shape), source)
    if array.size == 0:
        raise UsageError(f"{source} holds no images (shape {tuple(array.shape)}); check the file")
    pixels = torch.from_numpy(np.ascontiguousarray(_scale(array, source)))
    if layout == "NHW":
        return pixels.unsqueeze(1)
    if layout == "NHWC":
        return pixels.permute(0, 3, 1, 2).contiguous()
    return pixels


def _labels(array: np.ndarray, count: int, source: str) -> Tensor:
    """Labels as int64 (N,): a 1-D (or (N, 1)) array of non-negative whole numbers."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.ndim != 1 or array.shape[0] != count or not numeric:
        raise UsageError(
            f"labels in {source} have shape {tuple(array.shape)} and dtype {array.dtype}; "
            f"expected {count} whole numbers, one per image"
        )
    if count and (not np.isfinite(array).all() or (array != np.round(array)).any()):
        raise UsageError(f"labels in {source} must be whole numbers; store them as integers")
    if count and array.min() < 0:
        raise UsageError(f"labels in {source} must not be negative; number classes from 0")
    return torch.from_numpy(array.astype(np.int64))


def _load_npz(path: Path) -> tuple[Tensor, Tensor | None]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UsageError(f"{path} is a single .npy array, not an .npz archive; use np.savez")
        with loaded as archive:
            image_key = next((k for k in _IMAGE_KEYS if k in archive.files), None)
            if image_key is None:
                raise UsageError(
                    f"{path} has no 'images' or 'x' array (it has {sorted(archive.files)}); "
                    "save the images under the key 'images'"
                )
            label_key = next((k for k in _LABEL_KEYS if k in archive.files), None)
            images_array = archive[image_key]
            labels_array = None if label_key is None else archive[label_key]
    except UsageError:
        raise
    except NPZ_READ_ERRORS as exc:
        raise UsageError(
            f"cannot read {path} as an .npz archive ({exc}); save it with numpy.savez"
        ) from exc
    images = array_to_images(images_array, f"{path}[{image_key!r}]")
    labels = None
    if labels_array is not None:
        labels = _labels(labels_array, images.shape[0], f"{path}[{label_key!r}]")
    return images, labels


def _load_idx(path: Path) -> tuple[Tensor, Tensor | None]:
    array = read_idx(path)
    if array.ndim != 3:
        raise UsageError(
            f"IDX image file {path} has shape {array.shape}; expected (N, height, width)"
        )
    images = array_to_images(array, str(path))
    labels_path = find_idx_labels(path)
    if labels_path is None:
        return images, None
    return images, _labels(read_idx(labels_path), images.shape[0], str(labels_path))


def load_image_dataset(
    path: Path | str, image_size: int, channels: int
) -> tuple[Tensor, Tensor | None]:
    """Load every image of a dataset, converted to ``channels`` and resized to a square.

    Accepts a folder of images (searched recursively; images in class subfolders get the
    sorted subfolder index as label), an ``.npz`` archive (images under ``images`` or ``x``,
    optional labels under ``labels`` or ``y``) or an MNIST ``*-images-idx3-ubyte[.gz]`` file
    (with its ``*-labels-idx1-ubyte[.gz]`` file when next to it). Non-square images are
    stretched to the square.

    Args:
        path: the folder or file.
        image_size: side S of the square output images.
        channels: 1 (greyscale) or 3 (RGB).

    Returns:
        float32 images (N, C, S, S) in [0, 1], and int64 labels (N,) or None.

    Raises:
        UsageError: a missing, empty, unreadable or malformed source.
    """
    check_channels(channels)
    if channels is None:
        raise UsageError("channels must be 1 (greyscale) or 3 (RGB) for a dataset")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UsageError(f"image size must be a positive whole number, got {image_size!r}")
    path = Path(path)
    if not path.exists():
        raise UsageError(f"dataset {path} not found; give {_ACCEPTED}")
    if path.is_dir():
        return _load_folder(path, image_size, channels)
    if path.suffix.lower() == ".npz":
        images, labels = _load_npz(path)
    elif is_idx_images(path):
        images, labels = _load_idx(path)
    else:
        raise UsageError(f"cannot load a dataset from {path}; give {_ACCEPTED}")
    images, _ = convert_channels(images, channels)
    return resize_image(images, image_size), labels
