"""Fréchet distance of generated images to real ones on a DEQ classifier's features.

Reported as "FD (classifier features)": the features are those of this project's own
classifier (its pooled equilibrium state, see ``DEQClassifier.features``), so the numbers
compare runs that use the same classifier and are not FID.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jiio_cli.data import convert_channels, resize_image
from jiio_cli.engine import SolverConfig, forward_solve
from jiio_cli.frechet import frechet_distance
from jiio_cli.models import DEQClassifier

__all__ = ["classifier_fd", "classifier_features"]


def classifier_features(classifier: DEQClassifier, images: Tensor, batch_size: int = 250) -> Tensor:
    """Features (N, D) of images (N, c, S, S) in [0, 1] at the classifier's fixed point.

    Images are converted to the classifier's channels and resized to its resolution.
    """
    cfg = classifier.config
    images, _ = convert_channels(images, cfg.image_channels)
    if images.shape[-1] != cfg.image_size or images.shape[-2] != cfg.image_size:
        images = resize_image(images, cfg.image_size)
    param = next(classifier.parameters())
    images = images.to(param.device, param.dtype)
    feats = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            z0 = classifier.init_state(batch.shape[0])
            z = forward_solve(classifier.cell, batch, z0, SolverConfig(memory=10, max_iter=200)).z
            feats.append(classifier.features(z).cpu())
    return torch.cat(feats)


def classifier_fd(classifier: DEQClassifier, images: Tensor, reference: Tensor) -> float:
    """FD (classifier features) between two image sets (N, c, S, S), (M, c, S, S)."""
    return frechet_distance(
        classifier_features(classifier, images), classifier_features(classifier, reference)
    )
