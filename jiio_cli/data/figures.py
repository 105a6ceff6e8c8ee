"""Annotated pictures: clean, perturbation and adversarial images with predictions."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from jiio_cli.data.atomic import atomic_write
from jiio_cli.data.images import make_grid

__all__ = ["amplify_perturbation", "write_attack_figure"]

_SCALE = 3
_CAPTION = 12


def amplify_perturbation(delta: Tensor) -> Tensor:
    """Map δ (N, c, S, S) to [0, 1] for viewing: 0.5 + δ / (2 max|δ|) per image."""
    peak = delta.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return 0.5 + 0.5 * delta / peak


def write_attack_figure(
    path: Path | str,
    clean: Tensor,
    adversarial: Tensor,
    labels: Tensor,
    clean_predictions: Tensor,
    adversarial_predictions: Tensor,
) -> Path:
    """Write a PNG with three rows per image column: clean, amplified δ, adversarial.

    Each column is captioned ``y=<label>`` above the clean image, ``p=<prediction>``
    under it, and the adversarial prediction under the adversarial image (marked ``!``
    when the attack changed a correct prediction). Written atomically.

    Args:
        clean, adversarial: images (N, c, S, S) in [0, 1].
        labels, clean_predictions, adversarial_predictions: (N,) integer classes.
    """
    n, c, s, _ = clean.shape
    rows = torch.cat([clean, amplify_perturbation(adversarial - clean), adversarial]).cpu()
    grid = make_grid(rows.clamp(0, 1), nrow=n, padding=2)
    pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[..., 0] if c == 1 else pixels).convert("RGB")
    picture = picture.resize(
        (picture.width * _SCALE, picture.height * _SCALE), Image.Resampling.NEAREST
    )
    cell = (s + 2) * _SCALE
    band = 3 * cell + 2 * _SCALE
    canvas = Image.new("RGB", (picture.width, band + 3 * _CAPTION + 4), "white")
    canvas.paste(picture, (0, _CAPTION))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k in range(n):
        left = 2 * _SCALE + k * cell
        y, p, a = int(labels[k]), int(clean_predictions[k]), int(adversarial_predictions[k])
        flipped = p == y and a != y
        draw.text((left, 0), f"y={y} p={p}", fill="black", font=font)
        colour = "red" if flipped else "black"
        draw.text((left, _CAPTION + band), f"adv={a}{'!' if flipped else ''}", fill=colour)
    return atomic_write(path, lambda file: canvas.save(file, format="PNG"), "figure")
