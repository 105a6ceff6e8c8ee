"""FD (classifier features): zero for a set against itself, larger for noise than digits."""

from __future__ import annotations

import torch

from jiio_cli.data import load_mnist5k
from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.feature_distance import classifier_fd, classifier_features


def test_fd_orders_noise_after_real_digits() -> None:
    classifier = DEQClassifier(ClassifierConfig(channels=8, groups=4)).eval()
    heldout, _ = load_mnist5k("heldout")
    train, _ = load_mnist5k("train")
    reference = heldout[:100]
    noise = torch.rand(100, 1, 28, 28)
    assert classifier_fd(classifier, reference, reference) < 1e-6
    digits = classifier_fd(classifier, train[:100], reference)
    assert 0 < digits < classifier_fd(classifier, noise, reference)


def test_features_accept_other_sizes_and_colour() -> None:
    classifier = DEQClassifier(ClassifierConfig(channels=8, groups=4)).eval()
    colour = torch.rand(3, 3, 40, 40)
    feats = classifier_features(classifier, colour)
    assert feats.shape == (3, 8 * 16) and bool(torch.isfinite(feats).all())
