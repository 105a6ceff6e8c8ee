"""Single images and masks: read from PNG/JPEG, resize, and write atomically.

Images are float32 tensors (C, H, W) in [0, 1] with C = 1 (greyscale) or 3 (RGB). Masks are
bool tensors (H, W) where True marks a known pixel: in a mask file, white is known and black
is missing. Every problem with a user's file is reported as a one-line
:class:`~jiio_cli.errors.UsageError`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from jiio_cli.data.atomic import atomic_write
from jiio_cli.data.channels import check_channels, convert_channels
from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "IMAGE_SUFFIXES",
    "WRITE_FORMATS",
    "image_write_format",
    "make_grid",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "write_grid",
    "write_image",
]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"}
)
"""File suffixes treated as images when scanning a folder (reading accepts anything Pillow
opens, whatever its name)."""

WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
"""Suffix → Pillow format for :func:`write_image`."""

_JPEG_QUALITY = 95
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# Decoding failures Pillow lets through for damaged files; all mean "this file is broken".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _size_text(height: int, width: int) -> str:
    return f"{width}x{height}"


def _open_checked(path: Path) -> Image.Image:
    """Open and fully decode ``path``, turning every failure into a one-line UsageError."""
    if not path.exists():
        raise UsageError(f"image {path} not found; check the path")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not an image; give an image file")
    try:
        with Image.open(path) as pil:
            pil.load()
            # Phone photos store their rotation in EXIF; apply it so pixels match the viewer.
            return ImageOps.exif_transpose(pil)
    except UnidentifiedImageError as exc:
        raise UsageError(
            f"{path} is not an image file Pillow can read; give a PNG or JPEG image"
        ) from exc
    except PermissionError as exc:
        raise UsageError(
            f"cannot read image {path}: permission denied; check its permissions"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise UsageError(f"image {path} is too large to load safely; shrink it first") from exc
    except _DECODE_ERRORS as exc:
        raise UsageError(
            f"image {path} is damaged or truncated ({exc}); re-save it as PNG or JPEG"
        ) from exc


def _pil_to_tensor(pil: Image.Image, path: Path) -> Tensor:
    """Pixels of a decoded image as float32 (C, H, W) in [0, 1], C in 1..4 (alpha kept)."""
    mode = pil.mode
    try:
        if mode in _SIXTEEN_BIT_MODES:
            # 16-bit greyscale (PNG/TIFF): Pillow's own L conversion would clip, not scale.
            arr = np.asarray(pil, dtype=np.float32)[..., None] / 65535.0
        elif mode == "F":
            arr = np.asarray(pil, dtype=np.float32)[..., None]
        else:
            if mode in ("1", "L"):
                target = "L"
            elif mode in ("LA", "La"):
                target = "LA"
            elif mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in pil.info):
                target = "RGBA"
            else:  # RGB, palette, CMYK, YCbCr, ...
                target = "RGB"
            arr = np.asarray(pil.convert(target), dtype=np.float32) / 255.0
            if arr.ndim == 2:
                arr = arr[..., None]
    except _DECODE_ERRORS as exc:
        raise UsageError(
            f"image {path} uses colour mode {mode}, which cannot be converted; "
            "re-save it as an 8-bit PNG or JPEG"
        ) from exc
    arr = np.nan_to_num(np.clip(arr, 0.0, 1.0), nan=0.0)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def read_image(path: Path | str, channels: int | None = None) -> tuple[Tensor, list[str]]:
    """Read an image file (PNG, JPEG or anything else Pillow opens).

    Args:
        path: the image file.
        channels: 1 (greyscale) or 3 (RGB) to convert to; None keeps the file's own
            (greyscale stays 1 channel, colour becomes 3). Alpha is always dropped.

    Returns:
        float32 (C, H, W) in [0, 1], and notes on any conversion made, such as
        ``"converted RGB to greyscale"`` or ``"dropped the alpha channel"``.

    Raises:
        UsageError: the file is missing, a folder, not an image, or damaged.
    """
    check_channels(channels)
    path = Path(path)
    pil = _open_checked(path)
    return convert_channels(_pil_to_tensor(pil, path), channels)


def read_mask(path: Path | str, size: tuple[int, int]) -> Tensor:
    """Read a mask file: white (> 0.5 after greyscale conversion) is known, black is missing.

    Args:
        path: the mask image.
        size: the (height, width) the mask must have, i.e. that of the image it belongs to.

    Returns:
        bool (H, W), True where the pixel is known.

    Raises:
        UsageError: unreadable file, a size other than ``size``, or no known pixel at all.
    """
    path = Path(path)
    img, _ = read_image(path, channels=1)
    height, width = img.shape[-2:]
    if (height, width) != tuple(size):
        raise UsageError(
            f"mask {path} is {_size_text(height, width)} pixels but the image is "
            f"{_size_text(*size)} (width x height); give a mask the same size as the image"
        )
    known = img[0] > 0.5
    if not bool(known.any()):
        raise UsageError(
            f"mask {path} has no known pixels; paint the known pixels white and the missing "
            "ones black"
        )
    return known


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height < 1 or width < 1:
        raise UsageError(f"image size must be positive, got {_size_text(height, width)}")
    return int(height), int(width)


def resize_image(img: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize with bilinear interpolation, antialiased so that shrinking does not alias.

    Args:
        img: float (C, H, W) or a batch (N, C, H, W).
        size: an int for a square (size, size) result, or (height, width).

    Returns:
        The resized tensor, (C, h, w) or (N, C, h, w); ``img`` itself when already that size.
    """
    height, width = _pair(size)
    if tuple(img.shape[-2:]) == (height, width):
        return img
    batch = img if img.dim() == 4 else img.unsqueeze(0)
    out = F.interpolate(
        batch, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return out if img.dim() == 4 else out[0]


def resize_mask(mask: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize a bool mask (H, W) with nearest-neighbour sampling, so it stays binary.

    Returns:
        bool (h, w) for ``size`` = (h, w), or (size, size) for an int.
    """
    height, width = _pair(size)
    if tuple(mask.shape) == (height, width):
        return mask
    # nearest-exact samples pixel centres (like Pillow); plain "nearest" shifts by half a pixel.
    out = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest-exact")
    return out[0, 0] > 0.5


def image_write_format(path: Path) -> str:
    """The Pillow format :func:`write_image` uses for ``path``; a UsageError for a suffix
    it cannot write (so commands can check their output paths before any work)."""
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"cannot tell the image format of {path} from its suffix; end the name in "
            ".png, .jpg or .jpeg"
        )
    return fmt


def write_image(path: Path | str, img: Tensor) -> Path:
    """Write an image atomically; the format (PNG or JPEG) follows the file's suffix.

    Args:
        path: the target file, ending in .png, .jpg or .jpeg. Parent folders are created.
        img: float (C, H, W) with C = 1 or 3, or (H, W) for greyscale; values are clipped
            to [0, 1] and rounded to 8 bits.

    Returns:
        ``path``.

    Raises:
        UsageError: unknown suffix, or ``path`` is a folder.
        JiioError: non-finite pixels, or the file cannot be written.
    """
    path = Path(path)
    fmt = image_write_format(path)
    if img.dim() == 2:
        img = img.unsqueeze(0)
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (C, H, W) with C = 1 or 3, got {tuple(img.shape)}")
    img = img.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(img).all()):
        raise JiioError(f"cannot write image {path}: it contains NaN or infinite pixel values")
    pixels = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    options = {"quality": _JPEG_QUALITY} if fmt == "JPEG" else {}
    return atomic_write(path, lambda file: pil.save(file, format=fmt, **options), "image")


def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile a batch of images into one image, ``nrow`` images per row.

    Args:
        images: (N, C, H, W) with N ≥ 1.
        nrow: images per row; the last row is filled up with ``pad_value``.
        padding: pixels between images and around the border.
        pad_value: colour of the padding, in [0, 1].

    Returns:
        (C, rows · (H + padding) + padding, ncols · (W + padding) + padding).
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch (N, C, H, W), got {tuple(images.shape)}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"nrow must be ≥ 1 and padding ≥ 0, got {nrow} and {padding}")
    n, c, h, w = images.shape
    ncols = min(nrow, n)
    rows = math.ceil(n / ncols)
    grid = images.new_full(
        (c, rows * (h + padding) + padding, ncols * (w + padding) + padding), pad_value
    )
    for k in range(n):
        top = padding + (k // ncols) * (h + padding)
        left = padding + (k % ncols) * (w + padding)
        grid[:, top : top + h, left : left + w] = images[k]
    return grid


def write_grid(
    path: Path | str, images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0
) -> Path:
    """Write a batch (N, C, H, W) as one tiled image, atomically (see :func:`make_grid`)."""
    path = Path(path)
    image_write_format(path)  # fail on a bad suffix before any work
    return write_image(path, make_grid(images, nrow, padding, pad_value))
