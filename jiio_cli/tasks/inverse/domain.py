"""What data a model was trained on, and how far a user's image is from it.

A decoder only knows the images it was trained on: asked to fill a hole in a 512×512
photograph, an MNIST decoder reduces the photo to 28×28 and paints digit strokes into
the hole. A checkpoint therefore records its training data's domain (name, size,
channels, value range and the look of the images) in its metadata under
:data:`DOMAIN_KEY`, and :func:`domain_mismatches` names, in words, what separates an
input from it, before any solve.

The look of an image is read from its tones: MNIST digits are light strokes on a dark
background, with at most about 13 % of pixels in the mid-tones (0.15, 0.85) and at
least 69 % dark (measured on the 500 held-out MNIST-5k digits), while photographs have
most pixels in the mid-tones (scikit-image's ``camera`` 71 %, ``astronaut`` 73 %).
Noise adds mid-tones of its own, so the tones are read after a 3×3 median filter and,
for an input with noise σ, with the dark and light thresholds moved inwards by σ: then
none of 200 held-out digits with σ up to 0.4 reads as a photo, while scikit-image's
camera, astronaut, coffee, chelsea and rocket still do up to σ 0.1 (four of five at 0.2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DOMAIN_KEY",
    "MNIST_DIGITS",
    "DataDomain",
    "ImageLook",
    "domain_mismatches",
    "image_look",
    "mismatch_sentence",
    "training_domain",
]

DOMAIN_KEY = "data_domain"
"""Checkpoint metadata key holding the JSON of a :class:`DataDomain`."""

ImageLook = Literal["strokes", "photo", "dark-on-light", "images"]
"""How an image looks: light strokes on dark (``strokes``, as MNIST digits), continuous
tones (``photo``), dark shapes on a light background (``dark-on-light``), or anything
else (``images``)."""

# Tone thresholds of :func:`image_look` (see the module docstring for the measurements).
_DARK = 0.15
_LIGHT = 0.85
_MAX_STROKE_MIDTONES = 0.25
_MIN_STROKE_BACKGROUND = 0.5
_SIZE_FACTOR = 2.0


@dataclass(frozen=True)
class DataDomain:
    """The training data of a model.

    Attributes:
        name: what the data is, in words (``MNIST digits``, ``images from faces/``).
        height, width: the image size the model works at.
        channels: 1 (greyscale) or 3 (RGB).
        value_range: the pixel values' range (low, high).
        look: how the training images look (:data:`ImageLook`).
    """

    name: str
    height: int
    width: int
    channels: int
    value_range: tuple[float, float] = (0.0, 1.0)
    look: ImageLook = "images"

    def describe(self) -> str:
        """``28×28 greyscale MNIST digits``."""
        colour = "greyscale" if self.channels == 1 else "colour"
        return f"{self.width}×{self.height} {colour} {self.name}"

    def to_metadata(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_metadata(cls, extra: Mapping[str, str]) -> DataDomain | None:
        """The domain recorded in a checkpoint's metadata, None when absent or unreadable."""
        raw = extra.get(DOMAIN_KEY)
        if raw is None:
            return None
        try:
            fields = json.loads(raw)
            fields["value_range"] = tuple(float(v) for v in fields["value_range"])
            return cls(**fields)
        except (TypeError, ValueError, KeyError):
            return None


MNIST_DIGITS = DataDomain("MNIST digits", 28, 28, 1, (0.0, 1.0), "strokes")
"""The domain of the bundled MNIST-5k training set."""


def _median3(grey: Tensor) -> Tensor:
    """3×3 median filter of an image (H, W), edges replicated."""
    padded = F.pad(grey[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    windows = padded.unfold(0, 3, 1).unfold(1, 3, 1)
    return windows.reshape(*grey.shape, 9).median(dim=-1).values


def image_look(image: Tensor, sigma: float = 0.0) -> ImageLook:
    """How an image (C, H, W) in [0, 1] looks, from the shares of its tones.

    ``sigma``: the noise level of the image, which widens what counts as dark or light.
    """
    grey = _median3(image.float().mean(dim=0))
    dark = float((grey < _DARK + sigma).float().mean())
    light = float((grey > _LIGHT - sigma).float().mean())
    midtones = 1.0 - dark - light
    if midtones > _MAX_STROKE_MIDTONES:
        return "photo"
    if dark >= _MIN_STROKE_BACKGROUND:
        return "strokes"
    if light >= _MIN_STROKE_BACKGROUND:
        return "dark-on-light"
    return "images"


def training_domain(name: str, images: Tensor) -> DataDomain:
    """The domain of training images (N, C, H, W): their size, channels and common look."""
    sample = images[: min(len(images), 200)]
    looks = [image_look(img) for img in sample]
    common = max(set(looks), key=looks.count) if looks else "images"
    _, channels, height, width = images.shape
    low, high = float(sample.min()), float(sample.max())
    return DataDomain(name, height, width, channels, (min(low, 0.0), max(high, 1.0)), common)


_LOOK_WORDS = {
    "photo": "a photo",
    "strokes": "light strokes on a dark background",
    "dark-on-light": "dark shapes on a light background",
    "images": "another kind of image",
}


def domain_mismatches(
    domain: DataDomain, image: Tensor, has_hole: bool, sigma: float = 0.0
) -> list[str]:
    """What separates ``image`` (C, H, W) in [0, 1], noise level ``sigma``, from ``domain``,
    one phrase each.

    Empty when the image is within the domain: at most :data:`_SIZE_FACTOR` times larger
    or smaller on each side, no colour into a greyscale model, and the same look.
    """
    channels, height, width = image.shape
    problems: list[str] = []
    off_by = max(height / domain.height, domain.height / height, width / domain.width)
    off_by = max(off_by, domain.width / width)
    if off_by > _SIZE_FACTOR:
        verb = "reduced" if height * width > domain.height * domain.width else "enlarged"
        problems.append(
            f"the {width}×{height} image will be {verb} to {domain.width}×{domain.height} "
            "for the solve"
        )
    if channels == 3 and domain.channels == 1 and not _is_grey(image):
        problems.append(
            "it is in colour but the model knows greyscale only (the known pixels keep their "
            "colour; what the model fills in is grey)"
        )
    look = image_look(image, sigma)
    if domain.look != "images" and look != domain.look:
        problems.append(f"it looks like {_LOOK_WORDS[look]}")
    if problems and has_hole:
        problems.append(f"the hole will be filled with {_fill_words(domain)}")
    return problems


def _fill_words(domain: DataDomain) -> str:
    """What a decoder of ``domain`` paints into a hole, in words."""
    if domain.look == "strokes":
        return f"strokes like those of {domain.name}"
    return f"what {domain.name} look like"


def _is_grey(image: Tensor) -> bool:
    """True when the three channels of an RGB image (3, H, W) are (nearly) equal."""
    return bool((image - image.mean(dim=0, keepdim=True)).abs().max() < 1.0 / 255.0)


def mismatch_sentence(domain: DataDomain, name: str, problems: list[str]) -> str:
    """One sentence for a user: ``a.png: this decoder was trained on ...; ...``."""
    return f"{name}: this decoder was trained on {domain.describe()}; " + "; ".join(problems)
