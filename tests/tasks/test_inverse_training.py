"""Training a DEQ decoder: the loss goes down, resume equals an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from image_sets import save_blob_images
from training_runs import assert_resume_equals_uninterrupted, step_losses

from jiio_cli.data.augment import Augmentation
from jiio_cli.errors import UsageError
from jiio_cli.models import DecoderConfig
from jiio_cli.tasks.inverse.corruption import Corruption, corrupt
from jiio_cli.tasks.inverse.training import InverseTrainConfig, train_inverse
from jiio_cli.training import TrainConfig, TrainRun, checkpoint_paths


def _spec(data: Path, epochs: int, task: str = "denoise") -> InverseTrainConfig:
    return InverseTrainConfig(
        task=task,  # type: ignore[arg-type]
        corruption=Corruption(sigma=0.1) if task == "denoise" else Corruption(),
        model=DecoderConfig(latent_dim=8, channels=8, image_size=12, half_resolution=True),
        loop=TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, seed=7),
        inner_iterations=6,
        inner_memory=5,
        data=str(data),
        eval_size=8,
    )


@pytest.mark.parametrize("task", ["generate", "denoise"])
def test_short_training_decreases_the_loss(tmp_path: Path, task: str) -> None:
    data = save_blob_images(tmp_path / "blobs.npz", count=48)
    state = train_inverse(
        _spec(data, epochs=4, task=task), torch.device("cpu"), TrainRun(tmp_path / "run")
    )
    losses = step_losses(state)
    assert len(losses) == 4 * 3
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    last, best = checkpoint_paths(tmp_path / "run", task)
    assert last.exists() and best.exists()


@pytest.mark.parametrize("augmentation", [Augmentation(), Augmentation("elastic", 1.0)])
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path: Path, augmentation: Augmentation) -> None:
    data = save_blob_images(tmp_path / "blobs.npz", count=48)
    spec = InverseTrainConfig(**{**_spec(data, epochs=2).__dict__, "augmentation": augmentation})
    # Interrupt mid-epoch (after 4 of 6 steps), then resume to the end.
    assert_resume_equals_uninterrupted(train_inverse, spec, tmp_path, "denoise", 4)


def test_run_folder_is_never_silently_overwritten(tmp_path: Path) -> None:
    data = save_blob_images(tmp_path / "blobs.npz", count=16)
    spec = _spec(data, epochs=1)
    train_inverse(spec, torch.device("cpu"), TrainRun(tmp_path / "run"))
    with pytest.raises(UsageError, match="not empty"):
        train_inverse(spec, torch.device("cpu"), TrainRun(tmp_path / "run"))


def test_corruption_is_reproducible_and_masks_holes() -> None:
    clean = torch.rand(4, 1, 16, 16)
    spec = Corruption(sigma=(0.0, 0.3), hole_size=5)
    a = corrupt(clean, spec, torch.Generator().manual_seed(3))
    b = corrupt(clean, spec, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    observed, known = a
    assert (known.flatten(1).sum(1) == 16 * 16 - 25).all()
    assert (observed[known.expand_as(observed) == 0] == 0).all()


def test_trained_decoder_can_sample(tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from jiio_cli.cli.app import app

    data = save_blob_images(tmp_path / "blobs.npz", count=32)
    train_inverse(
        _spec(data, epochs=1, task="generate"), torch.device("cpu"), TrainRun(tmp_path / "run")
    )
    best = checkpoint_paths(tmp_path / "run", "generate")[1]
    from jiio_cli.checkpoint import load_checkpoint
    from jiio_cli.tasks.inverse.range_error import stored_range_error

    # The end of training also fits the decoder's range error (a finite τ² >= 0).
    assert stored_range_error(load_checkpoint(best).extra) is not None
    grid = tmp_path / "grid.png"
    runner = CliRunner(env={"NO_COLOR": "1"})
    args = [
        "sample",
        "-c",
        str(best),
        "--n",
        "6",
        "--nrow",
        "3",
        "--out",
        str(grid),
        "--device",
        "cpu",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Image.open(grid).size[0] > 3 * 12
    # The same seed draws the same images; another seed, others.
    first = grid.read_bytes()
    assert runner.invoke(app, args).exit_code == 0 and grid.read_bytes() == first
    assert runner.invoke(app, [*args, "--seed", "1"]).exit_code == 0
    assert grid.read_bytes() != first


def test_sample_needs_a_density(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jiio_cli.cli.app import app

    data = save_blob_images(tmp_path / "blobs.npz", count=16)
    spec = _spec(data, epochs=1, task="generate")
    spec = InverseTrainConfig(**{**spec.__dict__, "density_images": 0})
    train_inverse(spec, torch.device("cpu"), TrainRun(tmp_path / "run"))
    best = checkpoint_paths(tmp_path / "run", "generate")[1]
    result = CliRunner().invoke(
        app, ["sample", "-c", str(best), "--out", str(tmp_path / "g.png"), "--device", "cpu"]
    )
    assert result.exit_code == 1 and "no latent density" in result.stderr
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(("flag", "side"), [("half", 6), ("full", 12)])
def test_state_resolution_option_reaches_the_model(tmp_path: Path, flag: str, side: int) -> None:
    from typer.testing import CliRunner

    from jiio_cli.cli.app import app
    from jiio_cli.tasks.loading import load_model

    data = save_blob_images(tmp_path / "blobs.npz", count=32)
    run = tmp_path / "run"
    args = ["train", "--task", "generate", "--data", str(data), "--image-size", "12"]
    args += ["--width", "8", "--latent-dim", "4", "--epochs", "1", "--batch-size", "16"]
    args += ["--inner-iters", "4", "--state-resolution", flag, "--out", str(run)]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    decoder, ckpt = load_model(
        checkpoint_paths(run, "generate")[0], {"generate"}, "decoder", torch.device("cpu")
    )
    assert ckpt.model_config["half_resolution"] is (flag == "half")
    assert decoder.cell.state_shape == (8, side, side)
    image = decoder.head(decoder.cell.init_state(2))
    assert image.shape == (2, 1, 12, 12)


@pytest.mark.slow
def test_augment_option_reaches_the_run_and_changes_its_batches(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jiio_cli.cli.app import app
    from jiio_cli.tasks.loading import load_model

    data = save_blob_images(tmp_path / "blobs.npz", count=32)
    base = ["train", "--task", "generate", "--data", str(data), "--image-size", "12"]
    base += ["--width", "8", "--latent-dim", "4", "--epochs", "1", "--batch-size", "16"]
    base += ["--inner-iters", "4", "--device", "cpu", "--json"]
    losses = {}
    for flag in ("none", "shift:2"):
        run = tmp_path / flag.replace(":", "")
        result = CliRunner().invoke(app, [*base, "--augment", flag, "--out", str(run)])
        assert result.exit_code == 0, result.output
        _, ckpt = load_model(
            checkpoint_paths(run, "generate")[0], {"generate"}, "decoder", torch.device("cpu")
        )
        stored = ckpt.training_config["augmentation"]
        assert Augmentation(stored["kind"], stored["amount"]).describe() == flag
        history = json.loads(ckpt.extra["history"])
        losses[flag] = [h["loss"] for h in history if "loss" in h]
    # Same seed and data: only the shifted training images can make the losses differ.
    assert losses["none"] != losses["shift:2"]


@pytest.mark.slow
def test_init_fine_tunes_a_decoder_of_another_task(tmp_path: Path) -> None:
    """A denoising run started from a generate run's weights (``--init``): the new run
    starts from those weights (one Adam step of lr 1e-9 leaves them in place) and counts
    its own steps; a decoder of another shape is refused in one line."""
    from typer.testing import CliRunner

    from jiio_cli.cli.app import app

    data = save_blob_images(tmp_path / "blobs.npz", count=32)
    base = ["train", "--data", str(data), "--image-size", "12", "--width", "8"]
    base += ["--epochs", "1", "--batch-size", "16", "--inner-iters", "4"]
    base += ["--device", "cpu", "--json"]
    source = tmp_path / "source"
    seed = str(int(torch.randint(0, 1000, (1,))))
    first = [*base, "--task", "generate", "--latent-dim", "4", "--seed", seed]
    result = CliRunner().invoke(app, [*first, "--out", str(source)])
    assert result.exit_code == 0, result.output
    start = checkpoint_paths(source, "generate")[0]
    tuned = tmp_path / "tuned"
    args = [*base, "--task", "denoise", "--latent-dim", "4", "--lr", "1e-9", "--init", str(start)]
    result = CliRunner().invoke(app, [*args, "--out", str(tuned)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 2
    from jiio_cli.checkpoint import load_checkpoint

    a = load_checkpoint(start).tensors
    b = load_checkpoint(checkpoint_paths(tuned, "denoise")[0]).tensors
    names = [k for k in a if k.startswith("model.")]
    assert names and all(torch.allclose(a[k], b[k], atol=1e-7) for k in names)

    wider = [*base, "--task", "denoise", "--latent-dim", "6", "--init", str(start)]
    result = CliRunner().invoke(app, [*wider, "--out", str(tmp_path / "wider")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "has shape" in result.stderr
