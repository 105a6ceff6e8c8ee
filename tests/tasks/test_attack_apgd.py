"""APGD: its checkpoint schedule, step-size halving and restarts against hand-computed runs,
its iterates inside the budget and the pixel box, the DLR loss and the implicit gradient
of its DEQ oracle against references."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jiio_cli.engine import SolverConfig
from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.adversarial.apgd import (
    APGDConfig,
    Evaluation,
    apgd_ascent,
    apgd_attack,
    checkpoints,
    deq_oracle,
    dlr_objective,
)
from jiio_cli.tasks.adversarial.attacks import ThreatModel, classify


def _no_fooling(loss: torch.Tensor, grad: torch.Tensor) -> Evaluation:
    batch = loss.shape[0]
    flags = torch.zeros(batch, dtype=torch.bool)
    return Evaluation(loss, grad, flags, flags.clone(), torch.ones(batch, dtype=torch.long))


def test_checkpoints_are_the_papers_for_100_steps() -> None:
    # Croce & Hein (2020): w_j = ceil(p_j N) for p = 0, 0.22, 0.41, 0.57, 0.70, 0.80,
    # 0.87, 0.93, 0.99 (each period 0.03 shorter than the last, never below 0.06).
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(5) == [1, 2, 3, 4, 5]
    assert checkpoints(1) == [1]


def test_quadratic_run_matches_the_hand_computed_one() -> None:
    """L(x) = −(x − 0.62)² on the L∞ ball of radius 0.2 around 0.5, 5 steps (every step
    a checkpoint, so halvings and restarts happen early). Worked out by hand:

    step  from    η     u       x_next    L(x_next)    increase  at the checkpoint
    1     0.5     0.4   0.7     0.7       −0.0064      yes       keep η (no halving yet)
    2     0.7     0.4   0.3     0.45      −0.0289      no        η → 0.2, back to 0.7
    3     0.7     0.2   0.5     0.55      −0.0049      yes       keep (halved last time)
    4     0.55    0.2   0.7     0.625     −0.000025    yes       keep (new best)
    5     0.625   0.2   0.425   0.49375   −0.01594     no        η → 0.1, back to 0.625

    (x_next = P(x + α(u − x) + (1 − α)(x − x_prev)), α = 1 on step 1 and 0.75 after;
    at step 3 the restart point is both x and x_prev, so there is no momentum.)
    """

    def oracle(x: torch.Tensor) -> Evaluation:
        d = x.flatten(1)[:, 0] - 0.62
        return _no_fooling(-(d**2), (-2 * d).view(-1, 1))

    center = torch.tensor([[0.5]], dtype=torch.float64)
    threat = ThreatModel("linf", 0.2)
    run = apgd_ascent(
        oracle, center, threat.constraint(center), "linf", 0.2, APGDConfig(steps=5), True
    )
    assert run.iterates is not None
    expected = [0.5, 0.7, 0.45, 0.55, 0.625, 0.49375]
    assert run.iterates[:, 0, 0].tolist() == pytest.approx(expected, abs=1e-12)
    assert run.step_sizes[:, 0].tolist() == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.2])
    assert run.images.item() == pytest.approx(0.625)
    assert run.best_loss.item() == pytest.approx(-0.000025)
    assert run.f_evals.item() == 6


def _scripted(losses: list[float]):
    """An oracle that returns the next scripted loss at each call (gradient +1)."""
    calls = iter(losses)

    def oracle(x: torch.Tensor) -> Evaluation:
        value = next(calls)
        return _no_fooling(torch.full((x.shape[0],), value), torch.ones_like(x))

    return oracle


def _scripted_step_sizes(
    script: list[float], x: torch.Tensor, norm: Literal["linf", "l2"], eps: float
) -> torch.Tensor:
    """APGD's step sizes η (100,) over 100 steps from the one-sample ``x`` against the
    scripted oracle."""
    threat = ThreatModel(norm, eps)
    run = apgd_ascent(_scripted(script), x, threat.constraint(x), norm, eps, APGDConfig(steps=100))
    return run.step_sizes[:, 0]


@pytest.mark.parametrize("improves", [False, True])
def test_step_is_halved_when_the_best_loss_stalls(improves: bool) -> None:
    """Condition 2 alone: between checkpoints 22 and 41 all 19 steps increase the loss
    (condition 1 holds) but stay below the best (100, reached at step 10), and η was
    not halved at 22: η halves at 41. If one of them beats the best, η stays."""
    window_one = [10.0 * i for i in range(1, 11)] + [40.0] + [41.0 + i for i in range(11)]
    window_two = [52.0 + i for i in range(19)]
    if improves:
        window_two[-1] = 150.0
    rest = [200.0 + i for i in range(59)]
    script = [0.0, *window_one, *window_two, *rest]
    assert len(script) == 101
    eta = _scripted_step_sizes(script, torch.full((1, 3), 0.5), "linf", 0.01)
    assert eta[:41].tolist() == pytest.approx([0.02] * 41)
    assert eta[41:].tolist() == pytest.approx([0.02 if improves else 0.01] * 59)


def test_step_is_halved_when_few_steps_increase() -> None:
    """Condition 1 alone: 16 of the first 22 steps increase the loss (16 < 0.75 · 22)."""
    rising = [float(i) for i in range(1, 17)]
    falling = [16.0 - 0.5 * i for i in range(1, 7)]
    script = [0.0, *rising, *falling, *(100.0 + i for i in range(78))]
    eta = _scripted_step_sizes(script, torch.full((1, 2), 0.5), "l2", 0.5)
    assert eta[:22].tolist() == pytest.approx([1.0] * 22)
    # Halved once at 22; the new best after it keeps η at every later checkpoint.
    assert eta[22:].tolist() == pytest.approx([0.5] * 78)


def test_restart_resumes_from_the_best_point_per_sample() -> None:
    """Two samples, one whose loss falls after step 1 (restart at checkpoint 2 of a
    5-step run) and one whose loss keeps rising (no restart): per-sample decisions."""
    scripts = iter([[0.0, 0.0], [1.0, 1.0], [0.5, 2.0], [0.7, 3.0], [2.0, 4.0], [3.0, 5.0]])

    def oracle(x: torch.Tensor) -> Evaluation:
        return _no_fooling(torch.tensor(next(scripts)), torch.ones_like(x))

    x = torch.full((2, 1), 0.5)
    threat = ThreatModel("linf", 0.4)
    run = apgd_ascent(oracle, x, threat.constraint(x), "linf", 0.4, APGDConfig(steps=5), True)
    assert run.iterates is not None
    # Sample 0's step 2 does not increase its loss (0.5 < 1): at checkpoint 2 it halves η
    # and resumes from its best point (loss 1). Step 3 reaches 0.7: more than where the
    # step before ended (0.5) but less than where step 3 started (1), so no increase:
    # η halves again. Steps 4 and 5 increase to new bests: η stays. Sample 1 only ever
    # increases.
    assert run.step_sizes[:, 0].tolist() == pytest.approx([0.8, 0.8, 0.4, 0.2, 0.2])
    assert run.step_sizes[:, 1].tolist() == pytest.approx([0.8] * 5)
    assert run.best_loss.tolist() == pytest.approx([3.0, 5.0])


def _linear_oracle(weight: torch.Tensor, labels: torch.Tensor):
    """CE of a linear classifier x ↦ W x, with its exact gradient (autograd)."""

    def oracle(x: torch.Tensor) -> Evaluation:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            logits = xr.flatten(1) @ weight.T
            loss = F.cross_entropy(logits, labels, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), xr)
        fooled = logits.argmax(dim=1) != labels
        return Evaluation(
            loss.detach(),
            grad,
            fooled,
            torch.zeros_like(fooled),
            torch.ones(x.shape[0], dtype=torch.long),
        )

    return oracle


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.0, 3.0, allow_nan=False),
    steps=st.integers(1, 12),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_every_iterate_stays_inside_the_ball_and_the_pixel_box(
    seed: int, norm: str, eps: float, steps: int, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(3, 1, 4, 4, generator=g, dtype=dtype)
    clean[:, :, 0, :] = 0.0  # pixels on the box faces, where clamping matters
    clean[:, :, -1, :] = 1.0
    weight = torch.randn(5, 16, generator=g, dtype=dtype) * 3
    labels = torch.randint(0, 5, (3,), generator=g)
    threat = ThreatModel(norm, eps)  # type: ignore[arg-type]
    constraint = threat.constraint(clean)
    start = clean + torch.randn(clean.shape, generator=g, dtype=dtype)  # far outside
    run = apgd_ascent(
        _linear_oracle(weight, labels),
        start,
        constraint,
        norm,  # type: ignore[arg-type]
        eps,
        APGDConfig(steps=steps),
        keep_iterates=True,
    )
    assert run.iterates is not None
    for iterate in [*run.iterates, run.images]:
        d = (iterate - clean).flatten(1)
        size = d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
        assert bool((size <= eps).all())
        assert bool(((iterate >= 0) & (iterate <= 1)).all())


def test_ascent_raises_the_loss_of_a_linear_classifier() -> None:
    """A premise the schedule tests cannot fail on: APGD on a real loss improves it, and
    the returned point is at least as good as the start (it keeps the best)."""
    g = torch.Generator().manual_seed(3)
    clean = torch.rand(8, 1, 4, 4, generator=g, dtype=torch.float64) * 0.5 + 0.25
    weight = torch.randn(4, 16, generator=g, dtype=torch.float64)
    labels = (clean.flatten(1) @ weight.T).argmax(dim=1)  # clean points classified right
    threat = ThreatModel("l2", 0.5)
    oracle = _linear_oracle(weight, labels)
    run = apgd_ascent(oracle, clean, threat.constraint(clean), "l2", 0.5, APGDConfig(steps=20))
    start_loss = oracle(clean).loss
    assert bool((run.best_loss >= start_loss).all())
    assert float(run.best_loss.mean()) > float(start_loss.mean()) + 0.1
    returned = oracle(run.images)
    assert bool((returned.fooled | (returned.loss >= run.best_loss - 1e-12)).all())


_TINY = ClassifierConfig(num_classes=4, image_size=8, channels=8, groups=4)


def _model(seed: int) -> DEQClassifier:
    torch.manual_seed(seed)
    return DEQClassifier(_TINY).double().eval()


def test_dlr_matches_its_definition_by_hand() -> None:
    # A stand-in whose head is the identity, so the state is the logits.
    model = SimpleNamespace(config=SimpleNamespace(num_classes=4), head=lambda z: z)
    logits = torch.tensor([[3.0, 1.0, 0.5, -2.0], [0.0, 4.0, 2.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    # Sample 0: true 3, best other 1, top-3 spread 3 − 0.5; sample 1: true 2, other 4,
    # spread 4 − 1.
    expected = [(3 - 1) / 2.5, (2 - 4) / 3.0]
    got = dlr_objective(model, labels)(logits, logits)  # type: ignore[arg-type]
    assert got.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_oracle_gradient_is_the_implicit_one(loss: str) -> None:
    """∇_x L from the oracle (forward solve + adjoint solve) against central finite
    differences of L through converged forward solves, in float64."""
    model = _model(1)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([1, 3])
    solve = SolverConfig(memory=10, max_iter=300, tol=1e-12)
    oracle = deq_oracle(model, labels, loss, solve)  # type: ignore[arg-type]
    point = oracle(x)
    assert not bool(point.unconverged.any())
    direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
    h = 1e-5
    plus, minus = oracle(x + h * direction).loss, oracle(x - h * direction).loss
    numeric = (plus - minus) / (2 * h)
    analytic = (point.grad * direction).flatten(1).sum(dim=1)
    assert analytic.tolist() == pytest.approx(numeric.tolist(), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 2.0)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_attack_fools_at_least_as_often_as_the_clean_judge_says(
    norm: str, eps: float, loss: str
) -> None:
    """On a random tiny DEQ the attack stays in budget, its kept images are scored by the
    fresh judge, and it flips some clean-correct predictions (premise: a budget large
    enough that a gradient attack succeeds on a random model)."""
    model = _model(4)
    g = torch.Generator().manual_seed(5)
    clean = torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64)
    labels = classify(model, clean).predictions  # every clean image classified right
    threat = ThreatModel(norm, eps)  # type: ignore[arg-type]
    config = APGDConfig(
        steps=8, restarts=2, loss=loss, solve=SolverConfig(memory=5, max_iter=60, tol=1e-8)
    )
    out = apgd_attack(model, clean, labels, threat, config)
    d = (out.images - clean).flatten(1)
    size = d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
    assert bool((size <= eps).all())
    verdict = classify(model, out.images)
    assert int((verdict.predictions != labels).sum()) >= 1
    assert out.iterations.tolist() == [16] * 6
    assert bool((out.f_evals >= 2 * 9).all())
    assert not math.isnan(float(out.images.sum()))
