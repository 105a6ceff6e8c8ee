"""JIIO attack against a baseline with full solves (PGD or APGD-CE), side by side on one batch.

Strength is judged as everywhere else in jiio: robust accuracy from a fresh, fully
converged forward solve at the returned images (lower is a stronger attack), with the
mean cross-entropy there as the tie-breaker. Both methods run at growing budgets
(JIIO iterations, baseline steps) from scratch, on the same images, device and seed; the
**time-to-equal-objective ratio** is

    (time of the cheapest baseline run that reaches the baseline's final robust accuracy)
    / (time of the cheapest JIIO run that reaches that same robust accuracy).

The baseline is PGD (``pgd``, the paper's naive method) or APGD-CE (``apgd``, the
field's standard attack); its rows are listed under its name, and the ``pgd_*`` keys
below hold the baseline's numbers either way.

Robust accuracy moves in steps of 1/N and often saturates after a few PGD steps, so the
same ratio is also given for the mean cross-entropy at the returned images (the loss the
baselines maximise): ``ratio_by_loss`` compares the first runs whose mean loss reaches the
baseline's final mean loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.bench.timing import timed_median
from jiio_cli.models import DEQClassifier
from jiio_cli.tasks.adversarial.apgd import APGDConfig, apgd_attack
from jiio_cli.tasks.adversarial.attacks import (
    COMMAND_ATTACK,
    AttackOutcome,
    JIIOAttackConfig,
    PGDConfig,
    ThreatModel,
    classify,
    jiio_attack,
    pgd_attack,
)
from jiio_cli.tasks.adversarial.sweep import refuse_divergence

__all__ = ["AttackBenchConfig", "attack_time_to_equal_objective"]


@dataclass(frozen=True)
class AttackBenchConfig:
    """Budgets of both methods and their fixed settings (those of ``jiio attack``).

    ``baseline`` picks PGD (steps ``pgd_budgets``) or APGD-CE (steps ``apgd_budgets``;
    APGD's step-size schedule depends on its step count, so each budget is its own run).
    """

    jiio: JIIOAttackConfig = COMMAND_ATTACK
    pgd: PGDConfig = dataclasses.field(default_factory=PGDConfig)
    apgd: APGDConfig = dataclasses.field(default_factory=APGDConfig)
    baseline: Literal["pgd", "apgd"] = "pgd"
    jiio_budgets: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 80, 120, 160)
    pgd_budgets: tuple[int, ...] = (5, 10, 20)
    apgd_budgets: tuple[int, ...] = (10, 25, 50)
    repeat: int = 1


def _score(
    model: DEQClassifier, outcome: AttackOutcome, labels: Tensor, method: str
) -> dict[str, float]:
    verdict = classify(model, outcome.images)
    refuse_divergence(verdict.failed, f"{method} adversarial")
    ce = F.cross_entropy(verdict.logits, labels, reduction="none")
    return {
        "robust_accuracy": float((verdict.predictions == labels).float().mean()),
        "mean_loss": float(ce.mean()),
        "f_evals": float(outcome.f_evals.float().mean()),
        "iterations": float(outcome.iterations.float().mean()),
        "eval_unconverged": float((~verdict.converged).float().mean()),
    }


def attack_time_to_equal_objective(
    model: DEQClassifier,
    images: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    config: AttackBenchConfig,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
    on_row: Callable[[str, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Runs of both methods at every budget, and the speed ratio (see module docstring).

    ``progress(label, done, total)`` hears the budgets run so far for each method;
    ``on_row(method, row)`` gets each run's row as soon as it is measured.

    Returns a JSON-ready dict with ``jiio`` and ``pgd`` lists (budget, seconds, robust
    accuracy, mean loss, f-evaluations, iterations), the ``target`` robust accuracy,
    the times at which each method reaches it, and ``ratio`` (None when JIIO never does).
    """
    device = images.device
    refuse_divergence(classify(model, images).failed, "clean")
    # Warm-up: one-off costs (allocator, kernels) must not land on either method.
    jiio_attack(
        model, images[:2], labels[:2], threat, dataclasses.replace(config.jiio, iterations=3)
    )
    base = config.baseline
    rows: dict[str, list[dict[str, float]]] = {"jiio": [], base: []}
    budgets = config.pgd_budgets if base == "pgd" else config.apgd_budgets

    def report(method: str, row: dict[str, float], done: int, total: int) -> None:
        rows[method].append(row)
        if on_row is not None:
            on_row(method, row)
        if progress is not None:
            progress(f"{method} budgets", done, total)

    if progress is not None:
        progress(f"{base} budgets", 0, len(budgets))
    for done, steps in enumerate(budgets, start=1):
        outcome, seconds = timed_median(
            lambda steps=steps: _baseline(model, images, labels, threat, config, steps, seed),
            device,
            config.repeat,
        )
        row = {"budget": steps, "seconds": seconds, **_score(model, outcome, labels, base)}
        report(base, row, done, len(budgets))
    if progress is not None:
        progress("jiio budgets", 0, len(config.jiio_budgets))
    for done, iterations in enumerate(config.jiio_budgets, start=1):
        cfg = dataclasses.replace(config.jiio, iterations=iterations)
        outcome, seconds = timed_median(
            lambda cfg=cfg: jiio_attack(model, images, labels, threat, cfg), device, config.repeat
        )
        row = {"budget": iterations, "seconds": seconds, **_score(model, outcome, labels, "jiio")}
        report("jiio", row, done, len(config.jiio_budgets))
    return {
        "baseline": base,
        "threat": threat.label(),
        "images": int(images.shape[0]),
        **_times_to_target(rows, base),
        **rows,
    }


def _times_to_target(rows: dict[str, list[dict[str, float]]], base: str) -> dict[str, Any]:
    """Targets set by the baseline's largest budget (its robust accuracy and mean loss), the
    first seconds at which each method reaches them, and baseline/JIIO time ratios."""
    last = rows[base][-1]
    target, target_loss = last["robust_accuracy"], last["mean_loss"]
    pgd_reach = _seconds_to(rows[base], lambda r: r["robust_accuracy"] <= target)
    jiio_reach = _seconds_to(rows["jiio"], lambda r: r["robust_accuracy"] <= target)
    pgd_loss_reach = _seconds_to(rows[base], lambda r: r["mean_loss"] >= target_loss)
    jiio_loss_reach = _seconds_to(rows["jiio"], lambda r: r["mean_loss"] >= target_loss)
    return {
        "target_robust_accuracy": target,
        "pgd_seconds_to_target": pgd_reach,
        "jiio_seconds_to_target": jiio_reach,
        "ratio": _ratio(pgd_reach, jiio_reach),
        "target_mean_loss": target_loss,
        "pgd_seconds_to_target_loss": pgd_loss_reach,
        "jiio_seconds_to_target_loss": jiio_loss_reach,
        "ratio_by_loss": _ratio(pgd_loss_reach, jiio_loss_reach),
    }


def _seconds_to(
    runs: list[dict[str, float]], reached: Callable[[dict[str, float]], bool]
) -> float | None:
    """The shortest time among the runs that reach the target (None when none does)."""
    hits = [r["seconds"] for r in runs if reached(r)]
    return min(hits) if hits else None


def _ratio(baseline_seconds: float | None, jiio_seconds: float | None) -> float | None:
    """Baseline time over JIIO time; None when either never reaches the target."""
    if baseline_seconds is not None and jiio_seconds:
        return baseline_seconds / jiio_seconds
    return None


def _baseline(
    model: DEQClassifier,
    images: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    config: AttackBenchConfig,
    steps: int,
    seed: int,
) -> AttackOutcome:
    """One run of the baseline at ``steps`` steps, from the seed's random start."""
    generator = torch.Generator().manual_seed(seed)
    if config.baseline == "apgd":
        apgd = dataclasses.replace(config.apgd, steps=steps, loss="ce")
        return apgd_attack(model, images, labels, threat, apgd, generator)
    pgd = dataclasses.replace(config.pgd, steps=steps)
    return pgd_attack(model, images, labels, threat, pgd, generator)
