"""Data loading: MNIST-5k split, image/mask files, atomic writes and dataset sources."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jiio_cli.data import (
    convert_channels,
    load_image_dataset,
    load_mnist5k,
    make_grid,
    read_idx,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    sample_data_dir,
    split_indices,
    write_grid,
    write_image,
)
from jiio_cli.errors import JiioError, UsageError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng()


def _usage_error(fn, *args, **kwargs) -> str:
    """Run ``fn``, expect a UsageError, and return its (one-line) message."""
    with pytest.raises(UsageError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def _quantised(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    """Random float image with 8-bit values, so a PNG round trip is exact."""
    return torch.from_numpy(rng.integers(0, 256, shape).astype(np.float32) / 255.0)


def _smooth(rng: np.random.Generator, channels: int, size: int) -> torch.Tensor:
    """Random low-frequency image (C, S, S): JPEG keeps these close to the original."""
    coarse = torch.from_numpy(rng.uniform(0.1, 0.9, (1, channels, 4, 4)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0]


def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- MNIST-5k


@pytest.mark.parametrize(("split", "per_class"), [("train", 450), ("heldout", 50), ("all", 500)])
def test_mnist5k_split_sizes_and_range(split: str, per_class: int) -> None:
    images, labels = load_mnist5k(split)
    assert images.shape == (10 * per_class, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10 * per_class,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
    assert images.min() == 0.0 and images.max() == 1.0
    # Real digits: dark background, a few bright strokes.
    assert 0.05 < images.mean() < 0.25


def test_mnist5k_split_partitions_the_file() -> None:
    all_images, all_labels = load_mnist5k("all")
    train, _ = load_mnist5k("train")
    heldout, heldout_labels = load_mnist5k("heldout")
    index = split_indices(all_labels.numpy(), "heldout")
    assert torch.equal(all_images[index], heldout)
    assert torch.equal(all_labels[index], heldout_labels)
    assert train.shape[0] + heldout.shape[0] == all_images.shape[0]
    heldout[0].fill_(0.5)  # results are fresh copies, never the cached arrays
    assert not torch.equal(load_mnist5k("heldout")[0][0], heldout[0])


def test_split_indices_takes_last_50_of_each_class_in_file_order(rng) -> None:
    """Membership follows file order per class; the order interleaves the classes."""
    labels = rng.permutation(np.repeat(np.arange(10), 500))
    heldout = split_indices(labels, "heldout")
    train = split_indices(labels, "train")
    assert sorted(np.concatenate([train, heldout]).tolist()) == list(range(5000))
    for cls in range(10):
        members = np.flatnonzero(labels == cls)
        assert set(heldout[labels[heldout] == cls]) == set(members[-50:])
        assert set(train[labels[train] == cls]) == set(members[:450])
    for index in (heldout, train):
        # Every prefix of 10 holds one image of each class, each class in file order.
        assert all(sorted(labels[index[k : k + 10]]) == list(range(10)) for k in (0, 10, 40))
        for cls in range(10):
            chosen = index[labels[index] == cls]
            assert (np.diff(chosen) > 0).all()
    assert "heldout" in _usage_error(load_mnist5k, "test")


def test_sample_digits_are_consistent() -> None:
    folder = sample_data_dir() / "digits"
    for i in range(8):
        clean, notes = read_image(folder / f"digit_{i}.png")
        assert clean.shape == (1, 28, 28) and notes == []
        known = read_mask(folder / f"digit_{i}_mask.png", (28, 28))
        assert int((~known).sum()) == 100  # one 10x10 hole
        masked, _ = read_image(folder / f"digit_{i}_masked.png")
        assert torch.equal(masked, clean * known)
        noisy, _ = read_image(folder / f"digit_{i}_noisy.png")
        assert 0.1 < float((noisy - clean).std()) < 0.25


# ------------------------------------------------------------------------ image files


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_exact(tmp_path: Path, rng, channels: int) -> None:
    img = _quantised(rng, channels, 13, 21)
    path = write_image(tmp_path / "a.png", img)
    back, notes = read_image(path)
    assert notes == [] and back.dtype == torch.float32
    assert torch.equal(back, img)
    assert os.listdir(tmp_path) == ["a.png"]  # no temporary file left behind


@pytest.mark.parametrize(("channels", "suffix"), [(1, ".jpg"), (3, ".jpeg"), (3, ".JPG")])
def test_jpeg_round_trip_within_tolerance(tmp_path: Path, rng, channels: int, suffix) -> None:
    img = _smooth(rng, channels, 32)
    back, _ = read_image(write_image(tmp_path / f"a{suffix}", img), channels)
    assert back.shape == img.shape
    assert float((back - img).abs().mean()) < 0.02


def test_grey_rgb_conversion_notes(tmp_path: Path, rng) -> None:
    grey = _quantised(rng, 1, 8, 9)
    rgb_of_grey, notes = read_image(write_image(tmp_path / "g.png", grey), channels=3)
    assert notes == ["converted greyscale to RGB"]
    assert rgb_of_grey.shape == (3, 8, 9) and torch.equal(rgb_of_grey, grey.expand(3, -1, -1))
    rgb = _quantised(rng, 3, 8, 9)
    grey_of_rgb, notes = read_image(write_image(tmp_path / "c.png", rgb), channels=1)
    assert notes == ["converted RGB to greyscale"] and grey_of_rgb.shape == (1, 8, 9)
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    assert torch.allclose(grey_of_rgb, luma, atol=1e-6)
    assert read_image(tmp_path / "c.png", channels=3)[1] == []


def test_alpha_is_dropped_with_a_note(tmp_path: Path, rng) -> None:
    rgba = rng.integers(0, 256, (5, 6, 4))
    img, notes = read_image(_png(tmp_path / "a.png", rgba))
    assert notes == ["dropped the alpha channel"]
    assert torch.equal(img, torch.from_numpy(rgba[..., :3] / 255.0).float().permute(2, 0, 1))
    grey_alpha = Image.fromarray(rng.integers(0, 256, (5, 6, 2)).astype(np.uint8), mode="LA")
    grey_alpha.save(tmp_path / "la.png")
    img, notes = read_image(tmp_path / "la.png", channels=3)
    assert img.shape == (3, 5, 6)
    assert notes == ["dropped the alpha channel", "converted greyscale to RGB"]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    pixels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    img, _ = read_image(tmp_path / "deep.png")
    assert torch.allclose(img[0, 0], torch.tensor([0.0, 0.5, 1.0]), atol=1e-4)


def test_bad_image_files_raise_usage_errors(tmp_path: Path, rng) -> None:
    assert "not found" in _usage_error(read_image, tmp_path / "missing.png")
    assert "folder" in _usage_error(read_image, tmp_path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(rng.bytes(500))
    assert "not an image" in _usage_error(read_image, junk)
    data = (write_image(tmp_path / "ok.png", _quantised(rng, 3, 40, 40))).read_bytes()
    cut = tmp_path / "cut.png"
    # Any cut that loses pixel data; losing only the trailing checksums and the end chunk
    # still leaves every pixel, which Pillow (rightly) accepts.
    for end in sorted({1, 8, 20, 40, len(data) // 2, len(data) - 30}):
        cut.write_bytes(data[:end])
        _usage_error(read_image, cut)


def test_corrupted_png_body_raises_usage_error(tmp_path: Path, rng) -> None:
    data = bytearray(write_image(tmp_path / "ok.png", _quantised(rng, 1, 30, 30)).read_bytes())
    data[60:80] = rng.bytes(20)  # inside the compressed pixel data
    (tmp_path / "bad.png").write_bytes(bytes(data))
    _usage_error(read_image, tmp_path / "bad.png")


# ------------------------------------------------------------------------------ masks


def test_mask_white_is_known(tmp_path: Path, rng) -> None:
    known = rng.random((7, 9)) < 0.5
    known[0, 0] = True
    mask = read_mask(_png(tmp_path / "m.png", known * 255), (7, 9))
    assert mask.dtype == torch.bool and torch.equal(mask, torch.from_numpy(known))
    # An RGB mask goes through greyscale; mid-grey is below the 0.5 threshold.
    colour = np.repeat(np.where(known, 200, 100)[..., None], 3, axis=2)
    assert torch.equal(read_mask(_png(tmp_path / "c.png", colour), (7, 9)), mask)
    # Nothing missing is fine: the whole image is known.
    assert bool(read_mask(_png(tmp_path / "w.png", np.full((7, 9), 255)), (7, 9)).all())


def test_mask_errors(tmp_path: Path) -> None:
    path = _png(tmp_path / "m.png", np.full((7, 9), 255))
    message = _usage_error(read_mask, path, (9, 7))
    assert "9x7" in message and "7x9" in message
    black = _png(tmp_path / "black.png", np.zeros((7, 9)))
    assert "no known pixels" in _usage_error(read_mask, black, (7, 9))
    _usage_error(read_mask, tmp_path / "missing.png", (7, 9))


# ---------------------------------------------------------------------------- resizing


def test_resize_image_and_mask(rng) -> None:
    img = _quantised(rng, 3, 40, 30)
    assert resize_image(img, 16).shape == (3, 16, 16)
    assert resize_image(img[None], (20, 10)).shape == (1, 3, 20, 10)
    assert resize_image(img, (40, 30)) is img
    flat = torch.full((1, 32, 32), 0.7)
    assert torch.allclose(resize_image(flat, 7), torch.full((1, 7, 7), 0.7))
    mask = torch.from_numpy(rng.random((8, 8)) < 0.5)
    big = resize_mask(mask, 16)
    assert big.dtype == torch.bool and torch.equal(big[::2, ::2], mask)
    assert torch.equal(resize_mask(big, 8), mask)


def test_convert_channels_batches() -> None:
    batch = torch.rand(2, 4, 3, 3)
    out, notes = convert_channels(batch, 1)
    assert out.shape == (2, 1, 3, 3)
    assert notes == ["dropped the alpha channel", "converted RGB to greyscale"]
    _usage_error(convert_channels, batch, 2)


# ----------------------------------------------------------------------------- writing


def test_write_image_errors(tmp_path: Path, rng) -> None:
    img = _quantised(rng, 1, 4, 4)
    assert ".png" in _usage_error(write_image, tmp_path / "a.gif", img)
    (tmp_path / "d.png").mkdir()
    assert "directory" in _usage_error(write_image, tmp_path / "d.png", img)
    with pytest.raises(JiioError, match="NaN"):
        write_image(tmp_path / "n.png", torch.full((1, 2, 2), float("nan")))
    # Parent folders are created.
    assert write_image(tmp_path / "x" / "y" / "a.png", img).is_file()


def test_write_image_failure_leaves_no_partial_file(tmp_path: Path, rng, monkeypatch) -> None:
    target = tmp_path / "out.png"
    old = _quantised(rng, 1, 5, 5)
    write_image(target, old)

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise RuntimeError("disk fell off")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk fell off"):
        write_image(target, _quantised(rng, 1, 5, 5))
    with pytest.raises(RuntimeError):
        write_image(tmp_path / "new.png", old)
    with pytest.raises(RuntimeError):
        write_grid(tmp_path / "grid.png", old[None].expand(3, -1, -1, -1))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["out.png"]  # no temp files, no partial new files
    assert torch.equal(read_image(target)[0], old)  # the old file is untouched


def test_write_image_os_error_becomes_jiio_error(tmp_path: Path, rng, monkeypatch) -> None:
    def full_disk(self, fp, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(JiioError, match="No space left"):
        write_image(tmp_path / "a.png", _quantised(rng, 1, 3, 3))
    assert os.listdir(tmp_path) == []


def test_make_grid_and_write_grid(tmp_path: Path, rng) -> None:
    images = _quantised(rng, 5, 1, 6, 4)
    grid = make_grid(images, nrow=3, padding=2, pad_value=1.0)
    assert grid.shape == (1, 2 * 8 + 2, 3 * 6 + 2)
    assert torch.equal(grid[:, 2:8, 2:6], images[0])
    assert torch.equal(grid[:, 10:16, 8:12], images[4])
    assert bool((grid[:, 10:16, 14:18] == 1.0).all())  # the empty sixth cell
    back, _ = read_image(write_grid(tmp_path / "g.png", images, nrow=3))
    assert torch.equal(back, grid)
    assert os.listdir(tmp_path) == ["g.png"]


# ---------------------------------------------------------------------------- datasets


def test_dataset_from_class_folders(tmp_path: Path, rng) -> None:
    counts = {"cat": 2, "ant": 3, "dog": 1}
    for name, count in counts.items():
        (tmp_path / name / "deeper").mkdir(parents=True)
        for k in range(count):
            folder = tmp_path / name / ("deeper" if k == 0 else "")
            _png(folder / f"{k}.png", rng.integers(0, 256, (10, 12, 3)))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    _png(tmp_path / ".hidden" / "x.png", np.zeros((3, 3)))
    images, labels = load_image_dataset(tmp_path, image_size=8, channels=1)
    assert images.shape == (6, 1, 8, 8) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert labels is not None and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 2]


def test_dataset_from_flat_folder_has_no_labels(tmp_path: Path, rng) -> None:
    pixels = rng.integers(0, 256, (6, 6))
    _png(tmp_path / "a.png", pixels)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "b.jpg")
    images, labels = load_image_dataset(tmp_path, image_size=6, channels=3)
    assert images.shape == (2, 3, 6, 6) and labels is None
    assert torch.equal(images[0], torch.from_numpy(pixels / 255.0).float().expand(3, -1, -1))


def test_dataset_folder_errors(tmp_path: Path) -> None:
    assert "no images" in _usage_error(load_image_dataset, tmp_path, 8, 1)
    (tmp_path / "only.txt").write_text("hello")
    assert "no images" in _usage_error(load_image_dataset, tmp_path, 8, 1)
    assert "not found" in _usage_error(load_image_dataset, tmp_path / "nope", 8, 1)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert "broken.png" in _usage_error(load_image_dataset, tmp_path, 8, 1)
    _usage_error(load_image_dataset, tmp_path / "only.txt", 8, 1)
    _usage_error(load_image_dataset, tmp_path, 0, 1)
    _usage_error(load_image_dataset, tmp_path, 8, 2)


@pytest.mark.parametrize("layout", ["NHW", "NHWC1", "NHWC3", "NCHW1", "NCHW3", "NHWC4"])
@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_dataset_from_npz_layouts(tmp_path: Path, rng, layout: str, kind: str) -> None:
    n, h, w = 5, 9, 7
    channels = int(layout[-1]) if layout[-1].isdigit() else 1
    base = rng.integers(0, 256, (n, channels, h, w)).astype(np.uint8)
    stored = {
        "NHW": base[:, 0],
        "NHWC1": base.transpose(0, 2, 3, 1),
        "NHWC3": base.transpose(0, 2, 3, 1),
        "NHWC4": base.transpose(0, 2, 3, 1),
        "NCHW1": base,
        "NCHW3": base,
    }[layout]
    if kind == "float":
        stored = stored.astype(np.float32) / 255.0
    labels = rng.integers(0, 10, n)
    np.savez(tmp_path / "d.npz", images=stored, labels=labels)
    images, got = load_image_dataset(tmp_path / "d.npz", image_size=h, channels=3)
    assert images.shape == (n, 3, h, h) and images.dtype == torch.float32
    assert (
        got is not None and got.dtype == torch.int64 and torch.equal(got, torch.from_numpy(labels))
    )
    same_size, _ = load_image_dataset(tmp_path / "d.npz", image_size=h, channels=1)
    if channels == 1:
        expected = torch.from_numpy(base[:, :1, :, :] / 255.0).float()
        resized = resize_image(expected, h)
        assert torch.allclose(same_size, resized, atol=1e-6)


def test_dataset_npz_alternative_keys_and_errors(tmp_path: Path, rng) -> None:
    x = rng.random((4, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(4))
    images, labels = load_image_dataset(tmp_path / "xy.npz", 6, 1)
    assert torch.allclose(images[:, 0], torch.from_numpy(x)) and labels.tolist() == [0, 1, 2, 3]
    np.savez(tmp_path / "nolabels.npz", images=x)
    assert load_image_dataset(tmp_path / "nolabels.npz", 6, 1)[1] is None
    np.savez(tmp_path / "range.npz", images=x * 255.0)
    assert "[0, 1]" in _usage_error(load_image_dataset, tmp_path / "range.npz", 6, 1)
    np.savez(tmp_path / "nokey.npz", pixels=x)
    assert "'images'" in _usage_error(load_image_dataset, tmp_path / "nokey.npz", 6, 1)
    np.savez(tmp_path / "shape.npz", images=x[0])
    assert "shape" in _usage_error(load_image_dataset, tmp_path / "shape.npz", 6, 1)
    np.savez(tmp_path / "count.npz", images=x, labels=np.arange(3))
    assert "labels" in _usage_error(load_image_dataset, tmp_path / "count.npz", 6, 1)
    np.savez(tmp_path / "obj.npz", images=np.array([None, 1], dtype=object))
    _usage_error(load_image_dataset, tmp_path / "obj.npz", 6, 1)
    (tmp_path / "junk.npz").write_bytes(rng.bytes(300))
    _usage_error(load_image_dataset, tmp_path / "junk.npz", 6, 1)


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_dataset_from_idx_files(tmp_path: Path, rng, compress: bool) -> None:
    suffix = ".gz" if compress else ""
    pixels = rng.integers(0, 256, (6, 28, 28))
    labels = rng.integers(0, 10, 6)
    images_path = _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", pixels, compress)
    assert np.array_equal(read_idx(images_path), pixels)
    images, got = load_image_dataset(images_path, image_size=28, channels=1)
    assert got is None
    assert torch.equal(images, torch.from_numpy(pixels / 255.0).float().unsqueeze(1))
    # The labels file is found whether or not it is gzipped like the images.
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, compress=True)
    images, got = load_image_dataset(images_path, image_size=14, channels=3)
    assert images.shape == (6, 3, 14, 14)
    assert got is not None and torch.equal(got, torch.from_numpy(labels))


def test_idx_errors(tmp_path: Path, rng) -> None:
    pixels = rng.integers(0, 256, (3, 5, 5))
    path = _write_idx(tmp_path / "t10k-images-idx3-ubyte", pixels, compress=False)
    path.write_bytes(path.read_bytes()[:-7])
    assert "truncated" in _usage_error(load_image_dataset, path, 5, 1)
    path.write_bytes(rng.bytes(64))
    _usage_error(load_image_dataset, path, 5, 1)
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(40))[:-10])
    _usage_error(load_image_dataset, gz, 5, 1)
    ok = _write_idx(tmp_path / "a-images-idx3-ubyte", pixels, compress=False)
    _write_idx(tmp_path / "a-labels-idx1-ubyte", np.arange(2), compress=False)
    assert "labels" in _usage_error(load_image_dataset, ok, 5, 1)
    folder = tmp_path / "idxonly"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte", pixels, compress=False)
    assert "IDX" in _usage_error(load_image_dataset, folder, 5, 1)
