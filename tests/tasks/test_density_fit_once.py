"""The end of decoder training fits the latent density once per distinct decoder."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from image_sets import save_blob_images

from jiio_cli.checkpoint import MODEL_PREFIX, load_checkpoint, save_checkpoint_like
from jiio_cli.models import DecoderConfig
from jiio_cli.tasks.inverse import sampling
from jiio_cli.tasks.inverse.corruption import Corruption
from jiio_cli.tasks.inverse.range_error import stored_range_error
from jiio_cli.tasks.inverse.sampling import DENSITY_PREFIX, attach_density_to_checkpoints
from jiio_cli.tasks.inverse.training import InverseTrainConfig, train_inverse
from jiio_cli.training import TrainConfig, TrainRun, checkpoint_paths


def _counting_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the mixture fits (one per density fit) from here on."""
    calls: list[int] = []
    real: Callable[..., Any] = sampling.fit_gmm

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "fit_gmm", counted)
    return calls


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors = load_checkpoint(path).tensors
    return {k: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}


def _density(path: Path) -> tuple[dict[str, torch.Tensor], float | None]:
    ckpt = load_checkpoint(path)
    tensors = {k: v for k, v in ckpt.tensors.items() if k.startswith(DENSITY_PREFIX)}
    return tensors, stored_range_error(ckpt.extra)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_one_epoch(root: Path) -> Path:
    """A tiny generative decoder trained for one epoch in ``root / "run"``."""
    data = save_blob_images(root / "blobs.npz", count=24)
    spec = InverseTrainConfig(
        task="generate",
        corruption=Corruption(),
        model=DecoderConfig(latent_dim=4, channels=8, image_size=12, half_resolution=True),
        loop=TrainConfig(epochs=1, batch_size=16, lr=3e-3, seed=3),
        inner_iterations=4,
        inner_memory=4,
        data=str(data),
        eval_size=8,
        density_images=16,
        density_components=2,
    )
    train_inverse(spec, torch.device("cpu"), TrainRun(root / "run"))
    return root / "run"


def test_last_and_best_of_the_same_epoch_share_one_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = _counting_fits(monkeypatch)
    last, best = checkpoint_paths(_train_one_epoch(tmp_path), "generate")
    # The premise: one epoch, so the best checkpoint is the last one's decoder.
    assert _same(_model_tensors(last), _model_tensors(best))
    assert len(fits) == 1
    (last_density, last_tau), (best_density, best_tau) = _density(last), _density(best)
    assert last_density and _same(last_density, best_density)
    assert last_tau is not None and last_tau == best_tau


def test_different_decoders_get_a_fit_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    last, _ = checkpoint_paths(_train_one_epoch(tmp_path), "generate")
    copy, other = tmp_path / "copy.safetensors", tmp_path / "other.safetensors"
    shutil.copyfile(last, copy)
    ckpt = load_checkpoint(last)
    changed = dict(ckpt.tensors)
    key = next(k for k in changed if k.startswith(MODEL_PREFIX) and changed[k].is_floating_point())
    changed[key] = changed[key] + 0.5
    save_checkpoint_like(other, ckpt, changed)
    pixels = torch.from_numpy(np.load(save_blob_images(tmp_path / "fit.npz", 12))["images"])
    images = pixels.float()[:, None] / 255  # (12, 1, 12, 12) in [0, 1]
    fits = _counting_fits(monkeypatch)
    assert (
        attach_density_to_checkpoints([last, copy, other], images, torch.device("cpu"), 2, 8) == 2
    )
    assert len(fits) == 2
    assert _same(_density(last)[0], _density(copy)[0])
    assert not _same(_density(last)[0], _density(other)[0])
