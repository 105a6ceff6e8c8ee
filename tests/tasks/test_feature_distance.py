"""FD (classifier features): zero for a set against itself, larger for noise than digits."""

from __future__ import annotations

import torch

from jiio_cli.data import load_mnist5k
from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.inverse.feature_distance import classifier_fd, classifier_features


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


def test_sample_reports_fd_on_the_shipped_classifier(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from jiio_cli.cli.app import app

    result = CliRunner(env={"NO_COLOR": "1"}).invoke(
        app,
        [
            "sample",
            "--n",
            "24",
            "--fd",
            "--out",
            str(tmp_path / "g.png"),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["fd_classifier_features"] > 0 and doc["fd_train_digits_reference"] > 0
    assert doc["fd_classifier"].endswith("mnist-classifier.safetensors")
