"""Small classifier checkpoints for the attack tests (random weights, fresh per call)."""

from __future__ import annotations

from pathlib import Path

import torch

from jiio_cli.checkpoint import save_checkpoint, state_dict_to_tensors
from jiio_cli.models import ClassifierConfig, DEQClassifier


def save_classifier(path: Path, num_classes: int = 10, size: int = 28) -> Path:
    """Write an untrained 8-channel DEQ classifier checkpoint as ``train`` would."""
    model = DEQClassifier(
        ClassifierConfig(num_classes=num_classes, image_size=size, channels=8, groups=4)
    )
    save_checkpoint(
        path,
        {f"model.{k}": v for k, v in state_dict_to_tensors(model).items()},
        task="adversarial",
        model_kind="classifier",
        model_config=model.config.to_dict(),
        step=0,
        metrics={},
    )
    return path


def save_foreign_checkpoint(path: Path) -> Path:
    """Write a checkpoint of another task than the decoder's (``adversarial``, model kind
    ``classifier``) holding one tensor: enough for a reader's task check to refuse it."""
    return save_checkpoint(
        path,
        {"w": torch.zeros(2)},
        task="adversarial",
        model_kind="classifier",
        model_config={},
        step=0,
        metrics={},
    )
