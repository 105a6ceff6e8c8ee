"""Channel conversion between greyscale, RGB and their alpha variants, on float tensors.

Every reader in :mod:`jiio_cli.data` funnels through :func:`convert_channels`, so an image
read from a PNG and the same image read from an ``.npz`` end up with identical values.
"""

from __future__ import annotations

from torch import Tensor

from jiio_cli.errors import UsageError

__all__ = ["LUMA_WEIGHTS", "check_channels", "convert_channels"]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, the ones Pillow uses for its own RGB → L conversion."""

_NAMES = {1: "greyscale", 2: "greyscale with alpha", 3: "RGB", 4: "RGBA"}


def check_channels(channels: int | None) -> None:
    """Reject a channel count other than 1 (greyscale), 3 (RGB) or None (keep)."""
    if channels is not None and channels not in (1, 3):
        raise UsageError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels}")


def convert_channels(img: Tensor, channels: int | None) -> tuple[Tensor, list[str]]:
    """Convert an image (or a batch) to ``channels`` channels, dropping any alpha.

    Args:
        img: float tensor (..., C, H, W) with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or
            4 (RGBA).
        channels: 1 or 3; None keeps grey as grey and colour as colour.

    Returns:
        The converted tensor (..., channels, H, W) and human-readable notes on what changed,
        e.g. ``["dropped the alpha channel", "converted RGB to greyscale"]``.
    """
    check_channels(channels)
    if img.dim() < 3 or img.shape[-3] not in _NAMES:
        raise ValueError(f"expected (..., C, H, W) with C in 1..4, got {tuple(img.shape)}")
    notes: list[str] = []
    if img.shape[-3] in (2, 4):
        # Alpha is dropped rather than composited: transparent pixels keep their stored
        # colour, which for masks and scans is what the author drew.
        img = img[..., :-1, :, :]
        notes.append("dropped the alpha channel")
    if channels is None or channels == img.shape[-3]:
        return img, notes
    if channels == 1:
        weights = img.new_tensor(LUMA_WEIGHTS).view(3, 1, 1)
        grey = (img * weights).sum(dim=-3, keepdim=True).clamp(0.0, 1.0)
        notes.append("converted RGB to greyscale")
        return grey, notes
    notes.append("converted greyscale to RGB")
    return img.expand(*img.shape[:-3], 3, *img.shape[-2:]).contiguous(), notes
