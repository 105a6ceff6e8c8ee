"""Attacks on DEQ classifiers: budgets and box always hold, PGD restarts, honest scoring,
and the adversarial-training gradient against references."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jiio_cli.engine import SolverConfig, implicit_fixed_point
from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.adversarial.attacks import (
    JIIOAttackConfig,
    PGDConfig,
    ThreatModel,
    attack_objective,
    classify,
    jiio_attack,
    perturbation_norms,
    pgd_attack,
    random_start,
)
from jiio_cli.tasks.adversarial.sweep import run_attack_sweep
from jiio_cli.tasks.adversarial.training import adversarial_loss

_TINY = ClassifierConfig(num_classes=3, image_size=8, channels=8, groups=4)
_FAST_JIIO = JIIOAttackConfig(iterations=6, memory=4, tol=1e-3)
_FAST_PGD = PGDConfig(steps=3, solve=SolverConfig(memory=3, max_iter=8, tol=1e-3))


def _model(seed: int, dtype: torch.dtype = torch.float32) -> DEQClassifier:
    torch.manual_seed(seed)
    return DEQClassifier(_TINY).to(dtype).eval()


def _batch(seed: int, n: int = 4, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g, dtype=dtype)
    # Some pixels sit exactly on the box faces, where clamping matters most.
    images[:, :, 0, :] = 0.0
    images[:, :, -1, :] = 1.0
    labels = torch.randint(0, 3, (n,), generator=g)
    return images, labels


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.0, 3.0, allow_nan=False),
    method=st.sampled_from(["jiio", "jiio-candidates", "pgd"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_attacks_stay_inside_the_budget_and_the_pixel_box(
    seed: int, norm: str, eps: float, method: str, dtype: torch.dtype
) -> None:
    model = _model(seed % 1000, dtype)
    images, labels = _batch(seed, dtype=dtype)
    threat = ThreatModel(norm, eps)  # type: ignore[arg-type]
    if method == "jiio":
        outcome = jiio_attack(model, images, labels, threat, _FAST_JIIO)
    elif method == "jiio-candidates":
        config = dataclasses.replace(_FAST_JIIO, candidates=3, restarts=2)
        outcome = jiio_attack(model, images, labels, threat, config)
    else:
        gen = torch.Generator().manual_seed(seed)
        outcome = pgd_attack(model, images, labels, threat, _FAST_PGD, gen)
    adv = outcome.images
    assert adv.dtype == dtype and adv.shape == images.shape
    assert bool((adv >= 0).all()) and bool((adv <= 1).all())
    assert bool((perturbation_norms(adv, images, threat.norm) <= eps).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_inside_the_ball_and_random(norm: str) -> None:
    images, _ = _batch(1, n=16)
    threat = ThreatModel(norm, 0.3)  # type: ignore[arg-type]
    a = random_start(images, threat, torch.Generator().manual_seed(1))
    b = random_start(images, threat, torch.Generator().manual_seed(2))
    assert bool((perturbation_norms(a, images, norm) <= 0.3).all())  # type: ignore[arg-type]
    assert not torch.equal(a, b)
    assert bool((a >= 0).all() and (a <= 1).all())


def test_attack_raises_the_loss_and_pgd_restarts_never_hurt() -> None:
    model = _model(3)
    images, labels = _batch(3, n=8)
    threat = ThreatModel("linf", 0.2)

    def loss_at(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(
            classify(model, x).logits, labels, reduction="none"
        )

    clean_loss = loss_at(images)
    jiio = jiio_attack(model, images, labels, threat, JIIOAttackConfig(iterations=30, memory=5))
    assert loss_at(jiio.images).mean() > clean_loss.mean()
    one = pgd_attack(model, images, labels, threat, PGDConfig(steps=5, restarts=1))
    three = pgd_attack(model, images, labels, threat, PGDConfig(steps=5, restarts=3))
    # Restart 1 of the 3-restart run is the 1-restart run (same seed); later restarts
    # only replace a sample's result by a better one.
    fooled_one = classify(model, one.images).predictions != labels
    fooled_three = classify(model, three.images).predictions != labels
    assert bool((fooled_three | ~fooled_one).all())
    better_or_fooled = (loss_at(three.images) >= loss_at(one.images) - 1e-5) | fooled_three
    assert bool(better_or_fooled.all())
    assert bool((three.iterations == 3 * one.iterations).all())


def test_jiio_candidates_are_evenly_spaced_iterations() -> None:
    assert JIIOAttackConfig(iterations=80, candidates=4).checkpoints == (20, 40, 60)
    assert JIIOAttackConfig(iterations=80, candidates=1).checkpoints == ()
    assert JIIOAttackConfig(iterations=3, candidates=8).checkpoints == (1, 2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_jiio_candidates_keep_the_strongest_iterate(norm: str) -> None:
    seed = int(torch.randint(0, 2**31, ()).item())
    model = _model(seed % 1000)
    images, labels = _batch(seed, n=8)
    threat = ThreatModel(norm, 0.3 if norm == "linf" else 1.5)  # type: ignore[arg-type]
    base = JIIOAttackConfig(iterations=24, memory=4, loss="margin", solver="picard")
    last = jiio_attack(model, images, labels, threat, base)
    best = jiio_attack(model, images, labels, threat, dataclasses.replace(base, candidates=4))
    # The run is the same; the candidates only add earlier iterates to choose from.
    margin = attack_objective(model, labels, "margin")
    with torch.no_grad():
        m_last, m_best = margin(last.z, last.images), margin(best.z, best.images)
        fooled_last = model.head(last.z).argmax(1) != labels
        fooled_best = model.head(best.z).argmax(1) != labels
    assert bool((fooled_best | ~fooled_last).all())
    assert bool(((m_best <= m_last + 1e-6) | fooled_best).all())
    assert bool((best.f_evals >= last.f_evals).all())
    assert bool((perturbation_norms(best.images, images, threat.norm) <= threat.eps).all())


def test_sweep_scores_with_fresh_solves_and_counts_add_up() -> None:
    model = _model(4)
    images, labels = _batch(4, n=10)
    threats = [ThreatModel("linf", 0.0), ThreatModel("linf", 0.5)]
    result = run_attack_sweep(
        model, images, labels, threats, ["jiio", "pgd"], _FAST_JIIO, _FAST_PGD, 4, 0, 3
    )
    assert [r.method for r in result.rows] == ["jiio", "pgd", "worst"] * 2
    clean = float((classify(model, images).predictions == labels).float().mean())
    for row in result.rows:
        assert row.clean_accuracy == pytest.approx(clean)
        assert 0 <= row.robust_accuracy <= row.clean_accuracy
        assert row.max_norm <= row.eps
    # ε = 0 cannot move an image: robust accuracy is the clean accuracy.
    assert all(r.robust_accuracy == pytest.approx(clean) for r in result.rows[:3])
    jiio_row, pgd_row, worst = result.rows[3:]
    assert worst.robust_accuracy <= min(jiio_row.robust_accuracy, pgd_row.robust_accuracy)
    # Success rate and robust accuracy describe the same flips.
    flipped = clean - jiio_row.robust_accuracy
    assert jiio_row.success_rate == pytest.approx(flipped / clean if clean else 0.0, abs=1e-6)
    adv, preds = result.examples[("jiio", 0.5)]
    assert adv.shape == (3, 1, 8, 8) and preds.shape == (3,)


def test_adversarial_training_gradient_matches_an_exact_adjoint() -> None:
    """The warm-started gradient equals the one from a cold, tight adjoint solve, and a
    finite difference of CE at the fixed adversarial points (float64)."""
    model = _model(5, torch.float64)
    images, labels = _batch(5, n=3, dtype=torch.float64)
    threat = ThreatModel("l2", 0.5)
    config = JIIOAttackConfig(iterations=40, memory=6, tol=1e-10)
    gen = torch.Generator().manual_seed(0)
    result = adversarial_loss(model, images, labels, threat, "jiio", config, _FAST_PGD, 0.0, gen)
    params = [p for p in model.parameters() if p.requires_grad]
    warm = torch.autograd.grad(result.loss, params)

    outcome = jiio_attack(model, images, labels, threat, config)
    tight = SolverConfig(memory=6, max_iter=200, tol=1e-12)
    z = implicit_fixed_point(model.cell, outcome.z, outcome.images, tight)
    cold_loss = torch.nn.functional.cross_entropy(model.head(z), labels)
    cold = torch.autograd.grad(cold_loss, params)
    for a, b in zip(warm, cold, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-9)

    direction = [torch.randn_like(p) for p in params]
    slope = sum(float((g * d).sum()) for g, d in zip(cold, direction, strict=True))
    # The GroupNorm cell is strongly curved along some directions: a small step keeps
    # the central difference's O(h²) error well under the tolerance.
    h = 1e-6

    def ce_at(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * h * d)
            logits = classify(model, outcome.images, tight).logits
            value = float(torch.nn.functional.cross_entropy(logits, labels))
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * h * d)
        return value

    fd = (ce_at(1.0) - ce_at(-1.0)) / (2 * h)
    assert math.isclose(fd, slope, rel_tol=1e-4, abs_tol=1e-8)


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.masked_fill(
        torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), -torch.inf
    )
    return true - others.amax(dim=1)


def test_attack_objectives_are_minus_ce_and_the_logit_margin() -> None:
    model = _model(6)
    images, labels = _batch(6, n=5)
    with torch.no_grad():
        state = model.cell(model.init_state(5), images)
        logits = model.head(state)
        ce = attack_objective(model, labels, "ce")(state, images)
        margin = attack_objective(model, labels, "margin")(state, images)
    assert torch.allclose(ce, -torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
    for b in range(5):
        others = [float(logits[b, j]) for j in range(3) if j != int(labels[b])]
        assert float(margin[b]) == pytest.approx(float(logits[b, labels[b]]) - max(others))
    # Negative exactly when the sample is misclassified.
    assert torch.equal(margin < 0, logits.argmax(dim=1) != labels)
    with pytest.raises(ValueError, match="unknown attack loss"):
        attack_objective(model, labels, "hinge")  # type: ignore[arg-type]


@pytest.mark.parametrize("solver", ["anderson", "picard"])
def test_margin_attack_stays_feasible_and_lowers_the_margin(solver: str) -> None:
    model = _model(7)
    images, labels = _batch(7, n=8)
    threat = ThreatModel("l2", 1.0)
    cfg = JIIOAttackConfig(iterations=30, memory=5, loss="margin", solver=solver)  # type: ignore[arg-type]
    outcome = jiio_attack(model, images, labels, threat, cfg)
    assert bool((perturbation_norms(outcome.images, images, "l2") <= 1.0).all())
    clean = _margin(classify(model, images).logits, labels)
    attacked = _margin(classify(model, outcome.images).logits, labels)
    assert attacked.mean() < clean.mean()
