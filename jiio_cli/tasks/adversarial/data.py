"""The labelled images an attack runs on, checked against the classifier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import Tensor

from jiio_cli.data import load_image_dataset, load_mnist5k
from jiio_cli.errors import UsageError
from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.loading import default_checkpoint, load_model

__all__ = ["AttackTarget", "load_attack_set", "load_attack_target"]


@dataclass
class AttackTarget:
    """A classifier and the labelled images (N, c, S, S) and labels (N,) to attack it on."""

    checkpoint: Path
    model: DEQClassifier
    images: Tensor
    labels: Tensor
    notes: list[str]


def load_attack_target(
    checkpoint: Path | None, data: Path | None, max_images: int | None, device: torch.device
) -> AttackTarget:
    """The classifier at ``checkpoint`` (default: the shipped one) and its labelled set
    (see :func:`load_attack_set`), both on ``device``."""
    path = checkpoint if checkpoint is not None else default_checkpoint("classifier")
    model = cast(DEQClassifier, load_model(path, {"adversarial"}, "classifier", device)[0])
    images, labels, notes = load_attack_set(model.config, data, max_images)
    return AttackTarget(path, model, images.to(device), labels.to(device), notes)


def load_attack_set(
    config: ClassifierConfig, data: Path | None, max_images: int | None
) -> tuple[Tensor, Tensor, list[str]]:
    """Images (N, c, S, S) in [0, 1], labels (N,) and notes for the user.

    The default is the MNIST-5k held-out split (500 digits); ``data`` may be a folder with
    one subfolder per class, an ``.npz`` with labels, or MNIST IDX files. Images are
    converted to the classifier's channels and size.

    Raises:
        UsageError: no labels, labels outside the classifier's classes, or no images.
    """
    notes: list[str] = []
    if data is None:
        if (config.image_size, config.image_channels) != (28, 1):
            raise UsageError(
                f"the classifier expects {config.image_channels}-channel "
                f"{config.image_size}x{config.image_size} images; give labelled --data"
            )
        images, labels = load_mnist5k("heldout")
    else:
        images, maybe_labels = load_image_dataset(
            data, image_size=config.image_size, channels=config.image_channels
        )
        if maybe_labels is None:
            raise UsageError(
                f"--data {data} has no labels; use one subfolder per class, an .npz with "
                "'labels', or MNIST IDX files next to their labels file"
            )
        labels = maybe_labels
    if max_images is not None:
        images, labels = images[:max_images], labels[:max_images]
    if images.shape[0] == 0:
        raise UsageError("no images to attack")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= config.num_classes:
        raise UsageError(
            f"labels must lie in 0..{config.num_classes - 1} for this classifier, "
            f"found {low}..{high}"
        )
    return images, labels, notes
