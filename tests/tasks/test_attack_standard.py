"""The standard evaluation's worst case is per image: an image counts as robust only if it
survives every attack, each attack's broken images are named, and unconverged verdicts
count as broken from 1 % of the set on."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.adversarial import sweep
from jiio_cli.tasks.adversarial.attacks import (
    AttackOutcome,
    Classification,
    JIIOAttackConfig,
    PGDConfig,
    ThreatModel,
)
from jiio_cli.tasks.adversarial.sweep import STANDARD_METHODS, run_attack_sweep

# Which images (by index) each attack breaks; image 5 is misclassified clean.
_BREAKS = {"jiio": {0}, "apgd-ce": {1, 2}, "apgd-dlr": {2}, "pgd": {3, 5}}
_LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _fake_judge(unconverged: set[tuple[str, int]]):
    """Attacks write their name's index into pixel [0, 0, 0]; the judge misclassifies an
    image iff the attack that produced it breaks it (image 5 also clean), and reports an
    unconverged solve for the (attack, image) pairs in ``unconverged``."""
    names = ["clean", *STANDARD_METHODS]

    def run_method(method: str, model, x: Tensor, y: Tensor, *rest) -> AttackOutcome:
        images = x.clone()
        images[:, 0, 0, 0] = names.index(method)
        b = x.shape[0]
        zeros = torch.zeros(b, dtype=torch.long)
        return AttackOutcome(images, x, None, zeros + 1, zeros + 1, zeros.bool())

    def classify(model, images: Tensor, solve: object = None) -> Classification:
        index = images[:, 0, 0, 1].long()  # the image's position in the set
        method = names[int(images[0, 0, 0, 0])]
        labels = _LABELS[index]
        wrong = torch.tensor([int(i) in _BREAKS.get(method, set()) or int(i) == 5 for i in index])
        predictions = torch.where(wrong, (labels + 1) % 3, labels)
        converged = torch.tensor([(method, int(i)) not in unconverged for i in index])
        n = images.shape[0]
        return Classification(
            logits=torch.zeros(n, 3),
            predictions=predictions,
            residual=torch.zeros(n),
            converged=converged,
            failed=torch.zeros(n, dtype=torch.bool),
        )

    return run_method, classify


def _run(monkeypatch: pytest.MonkeyPatch, unconverged: set[tuple[str, int]]):
    run_method, classify = _fake_judge(unconverged)
    monkeypatch.setattr(sweep, "_run_method", run_method)
    monkeypatch.setattr(sweep, "classify", classify)
    images = torch.zeros(8, 1, 4, 4)
    images[:, 0, 0, 1] = torch.arange(8).float()
    model = DEQClassifier(ClassifierConfig(num_classes=3, image_size=4, channels=8, groups=4))
    return run_attack_sweep(
        model,
        images,
        _LABELS,
        [ThreatModel("l2", 1.0)],
        list(STANDARD_METHODS),  # type: ignore[arg-type]
        JIIOAttackConfig(),
        PGDConfig(),
        batch_size=3,  # batches that split the set unevenly
        seed=0,
        worst_label="standard",
    )


def test_the_worst_case_is_taken_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, set())
    rows = {r.method: r for r in result.rows}
    assert [r.method for r in result.rows] == [*STANDARD_METHODS, "standard"]
    # 7 of 8 correct clean; each attack alone leaves 6, 5, 6, 6 of them robust, while
    # per image, images 0-3 are each broken by some attack: 3 of 8 survive all.
    assert rows["jiio"].robust_accuracy == pytest.approx(6 / 8)
    assert rows["apgd-ce"].robust_accuracy == pytest.approx(5 / 8)
    assert rows["standard"].robust_accuracy == pytest.approx(3 / 8)
    assert rows["standard"].success_rate == pytest.approx(4 / 7)
    assert result.broken_by[("l2", 1.0)] == [
        ["jiio"],
        ["apgd-ce"],
        ["apgd-ce", "apgd-dlr"],
        ["pgd"],
        [],
        [],  # misclassified clean: no attack "broke" it
        [],
        [],
    ]
    assert not rows["standard"].unconverged_counted_broken
    assert rows["standard"].eval_unconverged == 0.0


def test_unconverged_verdicts_count_as_broken_from_one_percent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Image 4 survives every attack, but one attack's verdict on it did not converge:
    # 1 of 8 images (12.5 % >= 1 %) is counted as broken, and the row says so.
    result = _run(monkeypatch, {("apgd-dlr", 4)})
    standard = result.rows[-1]
    assert standard.eval_unconverged == pytest.approx(1 / 8)
    assert standard.unconverged_counted_broken
    assert standard.robust_accuracy == pytest.approx(2 / 8)
    assert result.eval_unconverged[("l2", 1.0)] == [False] * 4 + [True] + [False] * 3
    # The single attack's row reports the share but does not change its accuracy.
    dlr = next(r for r in result.rows if r.method == "apgd-dlr")
    assert dlr.eval_unconverged == pytest.approx(1 / 8)
    assert dlr.robust_accuracy == pytest.approx(6 / 8)


@pytest.mark.parametrize("unconverged,counted", [(0, False), (1, True), (2, True)])
def test_one_image_in_a_hundred_is_one_percent(unconverged: int, counted: bool) -> None:
    """1 unconverged verdict in 100 images is 1 % (a float32 mean makes it 0.99999 %)."""
    correct = torch.ones(100, dtype=torch.bool)
    flags = torch.zeros(100, dtype=torch.bool)
    flags[:unconverged] = True
    rows = [sweep.AttackRow("jiio", "l2", 1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.0, 80, 90)]
    row = sweep._worst_row(rows, correct.clone(), correct, flags, "standard")
    assert row.unconverged_counted_broken is counted
    assert row.eval_unconverged == pytest.approx(unconverged / 100)
    assert row.robust_accuracy == pytest.approx(1 - (unconverged / 100 if counted else 0))
