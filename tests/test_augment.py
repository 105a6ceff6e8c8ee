"""Training-image augmentation: exact shifts, smooth warps, reproducible draws."""

from __future__ import annotations

import pytest
import torch

from jiio_cli.data.augment import Augmentation, augment, parse_augmentation
from jiio_cli.distributed import BatchShard
from jiio_cli.tasks.inverse_training import augment_shard


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


def test_draws_are_reproducible_and_none_draws_nothing() -> None:
    images = _blobs(8)
    for aug in (Augmentation("shift", 1), Augmentation("elastic", 1.0)):
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
