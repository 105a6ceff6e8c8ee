"""Training-image augmentation: exact shifts, smooth warps, reproducible draws."""

from __future__ import annotations

import math

import pytest
import torch

from jiio_cli.data.augment import Augmentation, augment, parse_augmentation
from jiio_cli.distributed import BatchShard
from jiio_cli.tasks.inverse.training import augment_shard


def _blobs(count: int, side: int = 12, seed: int = 0) -> torch.Tensor:
    """Random images whose content stays 3 pixels clear of the border."""
    images = torch.zeros(count, 1, side, side)
    images[:, :, 3:-3, 3:-3] = torch.rand(
        count, 1, side - 6, side - 6, generator=torch.Generator().manual_seed(seed)
    )
    return images


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", Augmentation()),
        ("shift:2", Augmentation("shift", 2)),
        ("elastic:1.5", Augmentation("elastic", 1.5)),
        ("affine:0.5", Augmentation("affine", 0.5)),
    ],
)
def test_parse_reads_each_form(text: str, expected: Augmentation) -> None:
    assert parse_augmentation(text) == expected
    assert parse_augmentation(expected.describe()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "shift",
        "shift:0",
        "shift:1.5",
        "shift:x",
        "elastic:0",
        "elastic:9",
        "affine:0",
        "affine:2.5",
        "rotate:3",
        "none:1",
    ],
)
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_augmentation(text)


def test_shift_moves_each_image_by_a_whole_pixel_offset() -> None:
    images = _blobs(64)
    moved = augment(images, Augmentation("shift", 2), torch.Generator().manual_seed(1))
    offsets = set()
    for original, shifted in zip(images, moved, strict=True):
        # Content clear of the border: exactly one roll by (dy, dx) in [−2, 2]² reproduces it.
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(torch.roll(original, (dy, dx), dims=(1, 2)), shifted)
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # the offsets vary from image to image


def test_shift_fills_with_zeros_at_the_border() -> None:
    images = torch.ones(32, 1, 8, 8)
    moved = augment(images, Augmentation("shift", 1), torch.Generator().manual_seed(2))
    lost = 64 - moved.sum(dim=(1, 2, 3))
    # Each image loses the rows and columns it moved out of: 0, 8, 8 + 7 = 15 pixels.
    assert set(lost.tolist()) <= {0.0, 8.0, 15.0} and len(set(lost.tolist())) > 1


def test_elastic_warp_is_smooth_bounded_and_near_identity_when_small() -> None:
    images = _blobs(16)
    tiny = augment(images, Augmentation("elastic", 1e-3), torch.Generator().manual_seed(3))
    assert (tiny - images).abs().max() < 1e-2
    warped = augment(images, Augmentation("elastic", 1.0), torch.Generator().manual_seed(3))
    assert warped.shape == images.shape and warped.min() >= 0 and warped.max() <= 1
    assert (warped - images).abs().mean() > 1e-2


def _gaussian_blobs(centres: torch.Tensor, side: int, width: float) -> torch.Tensor:
    """Images (B, 1, side, side) of one Gaussian blob each, centred at ``centres`` (B, 2),
    given as (x, y) in grid_sample's [−1, 1] units (pixel i at (2i + 1)/side − 1)."""
    coords = (2 * torch.arange(side, dtype=torch.float64) + 1) / side - 1
    dx = coords[None, None, :] - centres[:, 0, None, None]
    dy = coords[None, :, None] - centres[:, 1, None, None]
    return torch.exp(-(dx**2 + dy**2) / (2 * width**2))[:, None].float()


def _centroids(images: torch.Tensor) -> torch.Tensor:
    side = images.shape[-1]
    coords = (2 * torch.arange(side, dtype=torch.float64) + 1) / side - 1
    mass = images[:, 0].double()
    total = mass.sum(dim=(1, 2))
    x = (mass * coords[None, None, :]).sum(dim=(1, 2)) / total
    y = (mass * coords[None, :, None]).sum(dim=(1, 2)) / total
    return torch.stack((x, y), dim=-1)


def test_affine_jitter_moves_each_blob_by_its_drawn_map() -> None:
    # Reference: the same draws turned into the forward map by hand, applied to the blob's
    # centre (an affine map carries a density's centroid to the mapped centroid).
    strength, count = 1.5, 32
    generator = torch.Generator().manual_seed(11)
    centres = (torch.rand(count, 2, generator=generator, dtype=torch.float64) - 0.5) * 0.6
    images = _gaussian_blobs(centres, side=64, width=0.08)
    moved = augment(images, Augmentation("affine", strength), torch.Generator().manual_seed(4))
    u = torch.rand(count, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    u = u * 2 - 1
    angle = torch.deg2rad(12 * strength * u[:, 0])
    scale = 1 + strength * (-0.025 + 0.125 * u[:, 1])
    shear = 0.15 * strength * u[:, 2]
    shift = 3 / 32 * strength * u[:, 3:]
    expected = torch.empty(count, 2, dtype=torch.float64)
    for i in range(count):
        rotation = torch.tensor(
            [[angle[i].cos(), -angle[i].sin()], [angle[i].sin(), angle[i].cos()]],
            dtype=torch.float64,
        )
        linear = scale[i] * rotation @ torch.tensor([[1.0, shear[i]], [0.0, 1.0]]).double()
        expected[i] = linear @ centres[i] + shift[i]
        # Area scales by det = scale²: the blob's mass does too.
        ratio = moved[i].double().sum() / images[i].double().sum()
        assert ratio == pytest.approx(float(scale[i]) ** 2, rel=2e-2)
    assert torch.allclose(_centroids(moved), expected, atol=4e-3)
    assert (_centroids(moved) - centres).norm(dim=-1).max() > 0.05  # it did move them


def test_affine_jitter_is_near_identity_when_weak() -> None:
    images = _blobs(16)
    tiny = augment(images, Augmentation("affine", 1e-4), torch.Generator().manual_seed(3))
    assert (tiny - images).abs().max() < 1e-2
    jittered = augment(images, Augmentation("affine", 1.0), torch.Generator().manual_seed(3))
    assert jittered.min() >= 0 and jittered.max() <= 1
    assert (jittered - images).abs().mean() > 1e-2


def test_draws_are_reproducible_and_none_draws_nothing() -> None:
    images = _blobs(8)
    for aug in (Augmentation("shift", 1), Augmentation("elastic", 1.0), Augmentation("affine", 1)):
        a = augment(images, aug, torch.Generator().manual_seed(5))
        b = augment(images, aug, torch.Generator().manual_seed(5))
        assert torch.equal(a, b)
    generator = torch.Generator().manual_seed(5)
    before = generator.get_state()
    assert augment(images, Augmentation(), generator) is images
    assert torch.equal(generator.get_state(), before)


@pytest.mark.parametrize("text", ["shift:2", "elastic:1"])
def test_shards_get_the_rows_of_one_process(text: str) -> None:
    images = _blobs(10)
    aug = parse_augmentation(text)

    def shard(start: int, stop: int) -> BatchShard:
        generator = torch.Generator().manual_seed(7)
        return BatchShard(torch.arange(10), start, stop, generator, generator)

    whole = augment_shard(images, aug, shard(0, 10))
    parts = [augment_shard(images[a:b], aug, shard(a, b)) for a, b in ((0, 4), (4, 10))]
    assert torch.allclose(torch.cat(parts), whole, atol=1e-6)
    assert not torch.equal(whole, images)


def test_affine_jitter_acts_in_pixels_on_non_square_images() -> None:
    # A blob off the centre of a 40×80 image: its centroid moves by the drawn map in pixel
    # units (rotation by the drawn angle, shift in fractions of the width), not stretched.
    height, width, strength = 40, 80, 1.5
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    centre = torch.tensor([width / 2 + 9.0, height / 2 - 5.0], dtype=torch.float64)
    blob = torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / 8)[None, None].float()
    moved = augment(blob, Augmentation("affine", strength), torch.Generator().manual_seed(4))
    u = torch.rand(1, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)[0]
    u = u * 2 - 1
    angle = math.radians(12 * strength * float(u[0]))
    scale = 1 + strength * (-0.025 + 0.125 * float(u[1]))
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
        dtype=torch.float64,
    )
    shear = torch.tensor([[1.0, 0.15 * strength * float(u[2])], [0.0, 1.0]], dtype=torch.float64)
    linear = scale * rotation @ shear
    middle = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    expected = linear @ (centre - middle) + middle + 3 / 64 * strength * u[3:] * width
    mass = moved[0, 0].double()
    got = torch.stack(((mass * xs).sum() / mass.sum(), (mass * ys).sum() / mass.sum()))
    assert torch.allclose(got, expected, atol=0.05)
