"""``jiio sample``: draw new images from a decoder's fitted latent density."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    DebugOption,
    DecoderCheckpointOption,
    DeviceOption,
    JsonOption,
    SeedOption,
    common_options,
)
from jiio_cli.cli.output import emit
from jiio_cli.errors import UsageError

__all__ = ["sample"]


class SampleCommandConfig(BaseModel):
    """Validated options of ``jiio sample``."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=10_000)
    nrow: int = Field(ge=1, le=256)


def sample(
    checkpoint: DecoderCheckpointOption = None,
    n: Annotated[int, typer.Option("--n", help="Number of images to draw.")] = 64,
    out: Annotated[Path, typer.Option(help="Grid picture to write (PNG or JPEG).")] = Path(
        "samples.png"
    ),
    nrow: Annotated[int, typer.Option(help="Images per grid row.")] = 8,
    fd: Annotated[
        bool,
        typer.Option(
            "--fd",
            help="Also report the Fréchet distance of the samples to the 500 held-out "
            "MNIST-5k digits on the shipped classifier's features (not FID).",
        ),
    ] = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Draw new images: latent codes from the checkpoint's Gaussian mixture, then decoded."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        opts = SampleCommandConfig(n=n, nrow=nrow)
        from jiio_cli.data import write_grid
        from jiio_cli.tasks.inverse.sampling import sample_images
        from jiio_cli.tasks.loading import default_checkpoint

        path = checkpoint if checkpoint is not None else default_checkpoint("decoder")
        drawn = sample_images(path, opts.n, common.seed, common.torch_device)
        write_grid(out, drawn.images.cpu(), nrow=opts.nrow)
        result = {
            "samples": opts.n,
            "out": str(out),
            "checkpoint": str(path),
            "components": drawn.components,
            "seed": common.seed,
        }
        if fd:
            result.update(_feature_distances(drawn.images, common.torch_device))
        emit(result, json_output=common.json_output, title="jiio sample")


def _feature_distances(images: torch.Tensor, dev: torch.device) -> dict[str, float | str]:
    """FD (classifier features) of the samples to held-out digits, and for scale the FD
    of as many training digits to the same held-out digits."""
    if images.shape[0] < 2:
        raise UsageError("--fd needs at least 2 samples (--n 2 or more; 500 is a good choice)")
    from jiio_cli.data import load_mnist5k
    from jiio_cli.frechet import frechet_distance
    from jiio_cli.tasks.inverse.feature_distance import classifier_features
    from jiio_cli.tasks.loading import default_checkpoint, load_model

    clf_path = default_checkpoint("classifier")
    classifier, _ = load_model(clf_path, {"adversarial"}, "classifier", dev)
    heldout, _ = load_mnist5k("heldout")
    train, _ = load_mnist5k("train")
    reference = classifier_features(classifier, heldout)
    samples = classifier_features(classifier, images)
    real = classifier_features(classifier, train[: images.shape[0]])
    return {
        "fd_classifier_features": frechet_distance(samples, reference),
        "fd_train_digits_reference": frechet_distance(real, reference),
        "fd_classifier": str(clf_path),
    }
