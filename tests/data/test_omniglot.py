"""Omniglot as it comes: archives and folders, merged duplicates, polarity, size,
rotations, the fixed split, and within-alphabet episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omniglot_fixtures import drawing, layout, write_folder, write_zip

from jiio_cli.data.episodes import (
    ClassPool,
    draw_episodes,
    load_omniglot_folder,
)
from jiio_cli.data.omniglot import (
    HELD_OUT_ALPHABETS,
    normalise_drawing,
    normalised_characters,
    read_omniglot,
    with_rotations,
)
from jiio_cli.errors import UsageError


def test_archives_and_folders_merge_characters_found_twice(tmp_path: Path) -> None:
    shared = layout({"Greek": 3}, drawers=range(1, 5))
    first = {**shared, **layout({"Korean": 2})}
    # The second archive repeats Greek's drawers 3-4 and adds drawers 5-6.
    second = {**layout({"Greek": 3}, drawers=range(3, 7)), **layout({"Tagalog": 4})}
    a = write_zip(tmp_path / "one.zip", "images_background_small1", first)
    b = write_folder(tmp_path / "two", second)
    drawings = read_omniglot([a, b])
    chars = normalised_characters(drawings, 14)
    names = chars.characters
    assert len(names) == len(set(names)) == 3 + 2 + 4
    greek = [i for i, n in enumerate(names) if n.startswith("Greek/")]
    assert len(greek) == 3
    for i in greek:  # drawers 1-4 from one source, 3-6 from the other: 1-6 once each
        assert chars.drawers[i].tolist() == [1, 2, 3, 4, 5, 6]
        assert chars.images[i].shape == (6, 1, 14, 14)
    korean = names.index("Korean/character01")
    assert chars.drawers[korean].tolist() == list(range(1, 7))
    # A folder holding the archive stands for it.
    again = read_omniglot([tmp_path])
    assert {(d.alphabet, d.character, d.drawer) for d in again} >= {
        (d.alphabet, d.character, d.drawer) for d in drawings
    }


def test_missing_or_empty_sources_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_omniglot([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no drawings"):
        read_omniglot([tmp_path / "empty"])
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable zip"):
        read_omniglot([tmp_path / "bad.zip"])


@pytest.mark.parametrize("preprocess", ["resize", "crop"])
def test_polarity_is_detected_and_strokes_become_one(preprocess: str) -> None:
    paper = torch.from_numpy(drawing(0, 1, 2)).float()[None] / 255  # black on white
    a = normalise_drawing(paper, 20, preprocess)
    b = normalise_drawing(1 - paper, 20, preprocess)  # white on black
    torch.testing.assert_close(a, b)
    assert a[..., 0, :].max() < 0.05 and a.max() > 0.9  # blank border, ink 1


def test_crop_to_ink_is_blind_to_size_and_placement() -> None:
    pixels = torch.from_numpy(drawing(1, 2, 4)).float()[None] / 255
    small = normalise_drawing(pixels, 16, "crop")
    # The same drawing, twice as large (nearest upsampling) and off-centre on a bigger page.
    big = pixels.repeat_interleave(2, -1).repeat_interleave(2, -2)
    page = torch.ones(1, 120, 100)
    page[:, 40:110, 5:75] = big
    moved = normalise_drawing(page, 16, "crop")
    assert (small - moved).abs().mean() < 0.03
    # Whole-image resizing keeps the placement, so there they differ.
    resized = normalise_drawing(pixels, 16, "resize") - normalise_drawing(page, 16, "resize")
    assert resized.abs().mean() > 0.05


def test_rotations_are_classes_of_their_own() -> None:
    images = (torch.rand(3, 1, 6, 6),)
    from jiio_cli.data.omniglot import OmniglotCharacters

    chars = OmniglotCharacters(images, (torch.tensor([1, 2, 3]),), ("A/c1",), ("A",))
    rotated = with_rotations(chars)
    assert rotated.characters == ("A/c1", "A/c1@90", "A/c1@180", "A/c1@270")
    assert rotated.alphabets == ("A", "A@90", "A@180", "A@270")
    for quarter in range(4):
        expected = torch.rot90(images[0], quarter, dims=(-2, -1))
        assert torch.equal(rotated.images[quarter], expected)
        assert rotated.drawers[quarter].tolist() == [1, 2, 3]


def test_split_holds_out_early_aramaic_and_tagalog(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "d", layout({"Early_Aramaic": 2, "Tagalog": 2, "Greek": 3}, range(1, 3))
    )
    train, held = normalised_characters(read_omniglot([root]), 8).split_held_out()
    assert set(held.alphabets) == set(HELD_OUT_ALPHABETS) and len(held.characters) == 4
    assert set(train.alphabets) == {"Greek"}
    pool = load_omniglot_folder(root, 8)
    assert pool.num_classes == 7 and pool.drawers is not None


def _identity_pool() -> ClassPool:
    """Three alphabets of 5, 6 and 3 classes, each class drawn by its own 10 of 12
    drawers (so any 4 classes share at least 12 − 4·2 = 4); image (c, d) is the constant
    c + d / 100, so every drawn image says its class and drawer."""
    images, drawers, alphabets = [], [], []
    for a, count in enumerate((5, 6, 3)):
        for _ in range(count):
            c = len(images)
            d = torch.randperm(12)[:10] + 1
            images.append((c + d.float() / 100)[:, None, None, None].expand(-1, 1, 4, 4))
            drawers.append(d)
            alphabets.append(f"alpha{a}")
    names = tuple(f"{a}/c{i}" for i, a in enumerate(alphabets))
    return ClassPool(tuple(images), names, tuple(alphabets), tuple(drawers))


def test_within_alphabet_episodes_keep_one_alphabet_and_disjoint_drawers() -> None:
    pool = _identity_pool()
    g = torch.Generator().manual_seed(int(torch.randint(0, 10**6, (1,))))
    ep = draw_episodes(pool, "within", 40, 4, 1, 2, g)
    seen_alphabets = set()
    for b in range(40):
        s_code, q_code = ep.support[b, :, 0, 0, 0], ep.query[b, :, 0, 0, 0]
        s_class, q_class = s_code.floor().long(), q_code.floor().long()
        s_drawer = ((s_code - s_class) * 100).round().long()
        q_drawer = ((q_code - q_class) * 100).round().long()
        alphabets = {pool.alphabets[c] for c in s_class.tolist() + q_class.tolist()}
        assert len(alphabets) == 1  # one alphabet per episode
        seen_alphabets |= alphabets
        assert not set(s_drawer.tolist()) & set(q_drawer.tolist())  # drawers disjoint
        # Labels follow the classes: support label k and query label k are one class.
        for k in range(4):
            s_of_k = s_class[ep.support_labels[b] == k].unique()
            assert s_of_k.numel() == 1
            assert (q_class[ep.query_labels[b] == k] == s_of_k).all()
        assert len(set(s_class.tolist())) == 4
    # Only alphabets with at least 4 classes are drawn, and both of them are.
    assert seen_alphabets == {"alpha0", "alpha1"}


def test_within_alphabet_episodes_need_an_alphabet_that_large() -> None:
    with pytest.raises(UsageError, match="no alphabet has 7 classes"):
        draw_episodes(_identity_pool(), "within", 1, 7, 1, 1, torch.Generator())


def test_folder_images_in_either_polarity_and_size_normalise_alike(tmp_path: Path) -> None:
    from PIL import Image

    from jiio_cli.data.episodes import load_class_folders

    for k in range(2):
        pixels = drawing(2, k, 1)
        for name, img in (
            ("plain", pixels),
            ("inverted_big", np.kron(255 - pixels, np.ones((3, 3), np.uint8))),
        ):
            folder = tmp_path / name / f"class_{k}"
            folder.mkdir(parents=True)
            Image.fromarray(img).save(folder / "0.png")
    a = load_class_folders(tmp_path / "plain", 20, "support", preprocess="crop")
    b = load_class_folders(tmp_path / "inverted_big", 20, "support", preprocess="crop")
    for x, y in zip(a.images, b.images, strict=True):
        assert (x - y).abs().mean() < 0.03
