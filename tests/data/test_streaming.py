"""Large image folders streamed from disk give exactly the pixels of the in-memory loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.data import load_image_dataset
from jiio_cli.data.streaming import StreamingImageFolder
from jiio_cli.errors import UsageError
from jiio_cli.models import DecoderConfig
from jiio_cli.tasks.inverse.corruption import Corruption
from jiio_cli.tasks.inverse.training import InverseTrainConfig, load_training_data, train_inverse
from jiio_cli.training import TrainConfig, TrainRun, checkpoint_paths


def _image_folder(root: Path, count: int = 30) -> Path:
    """Fresh random colour PNGs of mixed sizes in two class folders."""
    rng = np.random.default_rng()
    for i in range(count):
        side = int(rng.integers(10, 20))
        pixels = rng.integers(0, 256, size=(side, side + 3, 3), dtype=np.uint8)
        folder = root / ("a" if i % 3 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_pixels_equal_loaded_pixels(tmp_path: Path, workers: int) -> None:
    root = _image_folder(tmp_path / "images")
    loaded, _ = load_image_dataset(root, image_size=12, channels=1)
    streamed = StreamingImageFolder(root, 12, 1, workers=workers)
    try:
        assert len(streamed) == loaded.shape[0] and streamed.shape == tuple(loaded.shape)
        index = torch.randint(0, len(streamed), (9,))
        assert torch.equal(streamed[index], loaded[index])
        assert torch.equal(streamed[3:7], loaded[3:7])
        assert streamed[5:5].shape == (0, 1, 12, 12)
    finally:
        streamed.close()


def _spec(root: Path, stream: bool, max_train: int | None = None) -> InverseTrainConfig:
    return InverseTrainConfig(
        task="denoise",
        corruption=Corruption(sigma=0.1),
        model=DecoderConfig(latent_dim=8, channels=8, image_size=12, half_resolution=True),
        loop=TrainConfig(epochs=1, batch_size=8, lr=3e-3, seed=3),
        inner_iterations=4,
        inner_memory=5,
        data=str(root),
        max_train=max_train,
        eval_size=3,
        density_images=0,
        stream_data=stream,
        data_workers=0,
    )


def test_streamed_split_equals_loaded_split(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    train_s, held_s = load_training_data(_spec(root, True, max_train=20))
    train_m, held_m = load_training_data(_spec(root, False, max_train=20))
    assert isinstance(train_s, StreamingImageFolder) and isinstance(train_m, torch.Tensor)
    assert len(train_s) == train_m.shape[0] == 20
    assert torch.equal(held_s, held_m)
    assert torch.equal(train_s[torch.arange(20)], train_m)


def test_training_on_a_streamed_folder_equals_training_in_memory(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    cpu = torch.device("cpu")
    train_inverse(_spec(root, True), cpu, TrainRun(tmp_path / "streamed"))
    train_inverse(_spec(root, False), cpu, TrainRun(tmp_path / "loaded"))

    def losses(run: Path) -> list[float]:
        ckpt = load_checkpoint(checkpoint_paths(run, "denoise")[0])
        return [h["loss"] for h in json.loads(ckpt.extra["history"]) if "loss" in h]

    assert len(losses(tmp_path / "loaded")) == 4
    assert losses(tmp_path / "streamed") == losses(tmp_path / "loaded")


def test_a_damaged_file_met_while_streaming_is_one_line(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images", count=6)
    (root / "a" / "img001.png").write_bytes(b"not a png")
    streamed = StreamingImageFolder(root, 12, 1, workers=0)
    with pytest.raises(UsageError, match=r"img001\.png"):
        streamed[torch.arange(len(streamed))]


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="contains no images"):
        StreamingImageFolder(tmp_path / "empty", 12, 1)
