"""A model's training domain: recorded in checkpoints, and inputs far from it named in words."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.data import load_mnist5k
from jiio_cli.tasks.inverse.domain import (
    DOMAIN_KEY,
    MNIST_DIGITS,
    DataDomain,
    domain_mismatches,
    image_look,
    mismatch_sentence,
    training_domain,
)

MODELS = Path(__file__).resolve().parents[2] / "models"


def _camera() -> torch.Tensor:
    from skimage.data import camera

    return torch.from_numpy(camera()).float()[None] / 255.0


def test_digits_look_like_strokes_and_photos_like_photos() -> None:
    digits = load_mnist5k("heldout")[0][:100]
    assert {image_look(d) for d in digits} == {"strokes"}
    assert {image_look(1.0 - d) for d in digits} == {"dark-on-light"}
    assert image_look(_camera()) == "photo"
    # A constant mid-grey image is all mid-tones.
    assert image_look(torch.full((1, 8, 8), 0.5)) == "photo"


def test_an_image_inside_the_domain_has_no_mismatch() -> None:
    digit = load_mnist5k("heldout")[0][0]
    assert domain_mismatches(MNIST_DIGITS, digit, has_hole=True) == []
    # Exactly twice the size is still near enough; a grey image stored as RGB is grey.
    big = torch.nn.functional.interpolate(digit[None], size=(56, 56), mode="nearest")[0]
    assert domain_mismatches(MNIST_DIGITS, big, has_hole=True) == []
    assert domain_mismatches(MNIST_DIGITS, digit.expand(3, -1, -1), has_hole=True) == []


def test_a_photo_into_a_digit_model_is_named_in_words() -> None:
    photo = _camera()
    problems = domain_mismatches(MNIST_DIGITS, photo, has_hole=True)
    sentence = mismatch_sentence(MNIST_DIGITS, "camera.png", problems)
    assert sentence.startswith("camera.png: this decoder was trained on 28×28 greyscale MNIST")
    assert "the 512×512 image will be reduced to 28×28" in sentence
    assert "it looks like a photo" in sentence
    assert "the hole will be filled with strokes like those of MNIST digits" in sentence
    # Without a hole nothing is filled, so nothing is said about it.
    assert not any("hole" in p for p in domain_mismatches(MNIST_DIGITS, photo, has_hole=False))


def test_colour_into_a_grey_model_and_a_small_image_are_named() -> None:
    digit = load_mnist5k("heldout")[0][0]
    colour = torch.stack([digit[0], digit[0] * 0.2, digit[0] * 0.5])
    assert any("in colour" in p for p in domain_mismatches(MNIST_DIGITS, colour, False))
    small = digit[:, :13, :13]
    assert any("enlarged to 28×28" in p for p in domain_mismatches(MNIST_DIGITS, small, False))
    wide = torch.zeros(1, 28, 57)
    assert any("57×28" in p for p in domain_mismatches(MNIST_DIGITS, wide, False))


def test_domains_round_trip_through_metadata() -> None:
    domain = DataDomain("faces", 64, 48, 3, (0.0, 1.0), "photo")
    assert DataDomain.from_metadata({DOMAIN_KEY: domain.to_metadata()}) == domain
    assert DataDomain.from_metadata({}) is None
    assert DataDomain.from_metadata({DOMAIN_KEY: "{not json"}) is None
    assert DataDomain.from_metadata({DOMAIN_KEY: '{"name": "x"}'}) is None


def test_training_domain_is_measured_on_the_data() -> None:
    digits = load_mnist5k("train")[0][:300]
    assert training_domain("MNIST digits", digits) == MNIST_DIGITS


@pytest.mark.parametrize(
    ("stem", "size"),
    [
        ("mnist-decoder", 28),
        ("mnist-classifier", 28),
        ("meta-glyphs", 20),
        ("meta-glyphs-affine", 20),
        ("meta-glyphs-metric", 20),
    ],
)
def test_shipped_image_models_record_their_domain(stem: str, size: int) -> None:
    ckpt = load_checkpoint(MODELS / f"{stem}.safetensors")
    domain = DataDomain.from_metadata(ckpt.extra)
    assert domain is not None
    assert (domain.height, domain.width, domain.channels) == (size, size, 1)
    assert domain.look == "strokes" and domain.value_range == (0.0, 1.0)
    assert ckpt.model_config["image_size"] == size


def test_noise_does_not_turn_a_digit_into_a_photo() -> None:
    digits = load_mnist5k("heldout")[0][:100]
    generator = torch.Generator().manual_seed(0)
    noisy = (digits + 0.4 * torch.randn(digits.shape, generator=generator)).clamp(0, 1)
    # Read as clean, the noise's mid-tones look like a photo; told σ, they do not.
    assert sum(image_look(img) == "photo" for img in noisy) > 50
    assert all(domain_mismatches(MNIST_DIGITS, img, True, 0.4) == [] for img in noisy)
    noisy = (digits + 0.2 * torch.randn(digits.shape, generator=generator)).clamp(0, 1)
    assert all(domain_mismatches(MNIST_DIGITS, img, True, 0.2) == [] for img in noisy)
    assert image_look(_camera(), sigma=0.1) == "photo"
