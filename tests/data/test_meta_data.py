"""Few-shot data: class pools, episode sampling, Omniglot-layout folders, sinusoid tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jiio_cli.data.episodes import (
    ClassPool,
    check_episode_shape,
    draw_episodes,
    load_class_folders,
    load_glyph_pool,
    load_omniglot_folder,
)
from jiio_cli.data.sinusoid import sample_sinusoid_tasks
from jiio_cli.errors import UsageError


def _pool(classes: int, per_class: int, size: int = 8) -> ClassPool:
    # Class c's images are constant c (+ a per-image offset), so membership is checkable.
    images = tuple(
        (c + torch.arange(per_class).float()[:, None, None, None] / 100).expand(-1, 1, size, size)
        for c in range(classes)
    )
    return ClassPool(images, tuple(f"c{c}" for c in range(classes)), ("A",) * classes)


def test_episodes_have_the_right_shape_and_consistent_labels() -> None:
    pool = _pool(10, 6)
    g = torch.Generator().manual_seed(int(torch.randint(0, 10**6, (1,))))
    ep = draw_episodes(pool, "across", batch=3, ways=4, shots=2, queries=3, generator=g)
    assert ep.support.shape == (3, 8, 1, 8, 8) and ep.query.shape == (3, 12, 1, 8, 8)
    for b in range(3):
        s_class = ep.support[b, :, 0, 0, 0].floor()
        q_class = ep.query[b, :, 0, 0, 0].floor()
        # Each label names one class, in support and query alike, and classes differ.
        for k in range(4):
            classes = torch.cat(
                [s_class[ep.support_labels[b] == k], q_class[ep.query_labels[b] == k]]
            )
            assert (classes == classes[0]).all()
        assert len(set(s_class.tolist())) == 4
        # Support and query images of a class are different images.
        s_ids = set(ep.support[b, :, 0, 0, 0].tolist())
        assert not s_ids & set(ep.query[b, :, 0, 0, 0].tolist())


def test_episodes_are_a_function_of_the_seed() -> None:
    pool = _pool(10, 6)
    a = draw_episodes(pool, "across", 2, 5, 1, 2, torch.Generator().manual_seed(5))
    b = draw_episodes(pool, "across", 2, 5, 1, 2, torch.Generator().manual_seed(5))
    c = draw_episodes(pool, "across", 2, 5, 1, 2, torch.Generator().manual_seed(6))
    assert torch.equal(a.support, b.support) and not torch.equal(a.support, c.support)


def test_more_ways_than_classes_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="more than the 3 classes"):
        check_episode_shape(_pool(3, 5), ways=5, shots=1, queries=1, what="the pool")
    with pytest.raises(UsageError, match="need 5 images per class"):
        check_episode_shape(_pool(6, 3), ways=5, shots=1, queries=4, what="the pool")


def test_glyph_pools_are_disjoint_and_ink_on_blank() -> None:
    train, test = load_glyph_pool("train"), load_glyph_pool("test")
    assert not set(train.names) & set(test.names)
    assert not set(train.alphabets) & set(test.alphabets)
    img = test.images[0]
    assert img.shape == (20, 1, 28, 28) and img.min() >= 0 and img.max() <= 1
    assert img[:, :, 0, :].mean() < 0.05  # blank border


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def test_omniglot_layout_is_read_and_inverted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for alphabet in ("Alpha", "Beta"):
        for char in ("character01", "character02"):
            for d in range(3):
                pixels = np.full((35, 35), 255, np.uint8)  # white paper
                r = int(rng.integers(5, 25))
                pixels[r : r + 6, 10:20] = 0  # a black stroke
                _write(tmp_path / "root" / alphabet / char / f"{d}.png", pixels)
    pool = load_omniglot_folder(tmp_path / "root", image_size=14)
    assert pool.num_classes == 4 and pool.names[0] == "Alpha/character01"
    assert pool.alphabets == ("Alpha", "Alpha", "Beta", "Beta")
    x = pool.images[0]
    assert x.shape == (3, 1, 14, 14)
    assert x[:, :, 0, :].max() < 0.01 and x.max() > 0.9  # ink 1 on a blank border


def test_class_folder_errors_are_one_line(tmp_path: Path) -> None:
    _write(tmp_path / "s" / "a" / "1.png", np.zeros((10, 10)))
    (tmp_path / "s" / "b").mkdir()
    with pytest.raises(UsageError, match=r"class 'b'.*has no images"):
        load_class_folders(tmp_path / "s", 8, "support")
    # Images of other sizes are fine: each is normalised to S×S on its own.
    _write(tmp_path / "s" / "b" / "1.png", np.zeros((12, 10)))
    assert load_class_folders(tmp_path / "s", 8, "support").images[1].shape == (1, 1, 8, 8)
    (tmp_path / "q").mkdir()
    with pytest.raises(UsageError, match="no class subfolders"):
        load_class_folders(tmp_path / "q", 8, "query")


def test_sinusoid_tasks_follow_their_parameters() -> None:
    g = torch.Generator().manual_seed(int(torch.randint(0, 10**6, (1,))))
    tasks = sample_sinusoid_tasks(16, 5, 7, g)
    assert tasks.support_t.shape == (16, 5, 1) and tasks.query_y.shape == (16, 7, 1)
    expected = tasks.amplitude[:, None, None] * torch.sin(
        tasks.query_t - tasks.phase[:, None, None]
    )
    torch.testing.assert_close(tasks.query_y, expected)
    assert (tasks.support_t.abs() <= 5).all()
    assert (tasks.amplitude >= 0.1).all() and (tasks.amplitude <= 5).all()
