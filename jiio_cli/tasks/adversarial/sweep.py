"""Run attacks over budgets and methods on a labelled set and score them honestly.

Every number reported comes from :func:`~jiio_cli.tasks.adversarial.attacks.classify` — a fresh
forward solve from zeros at a tight tolerance — at the clean and at the adversarial
images, never from the attack's own state. A sample counts as robust when it is
classified correctly both clean and under attack; the attack success rate is the share
of correctly classified clean samples that the attack flips.

With several methods a last row per budget is the per-image worst case: a sample is
robust only if it survives every method, and ``SweepResult.broken_by`` says which
methods broke each image. An adversarial image whose fresh solve did not converge is
reported (``eval_unconverged``); in the worst-case row, when such images are 1 % of the
set or more, they are counted as broken (``unconverged_counted_broken``), because a
verdict read off an unconverged equilibrium may be a false "robust".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from jiio_cli.engine import SolverConfig
from jiio_cli.errors import JiioError
from jiio_cli.models import DEQClassifier
from jiio_cli.tasks.adversarial.apgd import APGDConfig, apgd_attack
from jiio_cli.tasks.adversarial.attacks import (
    AttackOutcome,
    Classification,
    JIIOAttackConfig,
    PGDConfig,
    ThreatModel,
    classify,
    jiio_attack,
    perturbation_norms,
    pgd_attack,
)
from jiio_cli.tasks.wall_clock import timed

__all__ = [
    "STANDARD_METHODS",
    "UNCONVERGED_PERCENT",
    "AttackRow",
    "SweepResult",
    "refuse_divergence",
    "run_attack_sweep",
]

Method = Literal["jiio", "pgd", "apgd-ce", "apgd-dlr"]

STANDARD_METHODS: tuple[Method, ...] = ("jiio", "apgd-ce", "apgd-dlr", "pgd")
"""The attacks whose per-image worst case is the standard evaluation (``--method
standard``): the row a paper would report."""

UNCONVERGED_PERCENT = 1
"""Share of images (in percent) with an unconverged adversarial verdict from which the
worst-case row counts those images as broken."""


@dataclass
class AttackRow:
    """One method at one budget, over the whole set."""

    method: str
    norm: str
    eps: float
    clean_accuracy: float
    robust_accuracy: float
    success_rate: float
    mean_norm: float
    max_norm: float
    seconds: float
    attack_unconverged: float
    eval_unconverged: float
    mean_iterations: float
    mean_f_evals: float
    unconverged_counted_broken: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SweepResult:
    """Rows per (budget, method), clean-solve convergence, and kept adversarial images.

    ``examples`` maps (method, eps) to adversarial images (N, c, S, S) and their fresh
    predictions, for writing pictures; ``clean_predictions`` are the clean verdicts.
    ``broken_by`` maps (norm, eps) to, per image, the methods whose adversarial image
    the fresh solve misclassified (empty for robust and for clean-misclassified images);
    ``eval_unconverged`` maps (norm, eps) to, per image, whether some method's
    adversarial image was scored by an unconverged solve.
    """

    rows: list[AttackRow]
    clean_unconverged: float
    clean_predictions: Tensor
    examples: dict[tuple[str, float], tuple[Tensor, Tensor]] = field(default_factory=dict)
    broken_by: dict[tuple[str, float], list[list[str]]] = field(default_factory=dict)
    eval_unconverged: dict[tuple[str, float], list[bool]] = field(default_factory=dict)


def _run_method(
    method: Method,
    model: DEQClassifier,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    jiio: JIIOAttackConfig,
    pgd: PGDConfig,
    apgd: APGDConfig,
    generator: torch.Generator,
) -> AttackOutcome:
    if method == "jiio":
        return jiio_attack(model, x, y, threat, jiio)
    if method in ("apgd-ce", "apgd-dlr"):
        loss = "ce" if method == "apgd-ce" else "dlr"
        return apgd_attack(model, x, y, threat, replace(apgd, loss=loss), generator)
    if method == "pgd":
        return pgd_attack(model, x, y, threat, pgd, generator)
    raise ValueError(f"unknown attack method {method!r}")


def run_attack_sweep(
    model: DEQClassifier,
    images: Tensor,
    labels: Tensor,
    threats: list[ThreatModel],
    methods: list[Method],
    jiio: JIIOAttackConfig,
    pgd: PGDConfig,
    batch_size: int,
    seed: int,
    keep_examples: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    apgd: APGDConfig | None = None,
    worst_label: str = "worst",
    scoring: SolverConfig | None = None,
    on_batch: Callable[[SweepResult], None] | None = None,
) -> SweepResult:
    """Attack ``images`` (N, c, S, S) with ``labels`` (N,) at every budget and method.

    With several methods, an extra row ``worst_label`` counts a sample as robust only if
    it survives every method (the strongest attack per sample; see the module docstring
    for unconverged verdicts).

    The set is worked through batch by batch, each batch by every budget and method, so
    that after each batch the result over the images finished so far is complete in
    itself (an interrupted run still has it). Each (budget, method) draws its random
    starts from its own generator seeded by ``seed`` for the whole set.

    Args:
        apgd: APGD settings (its ``loss`` is set by the method name).
        keep_examples: keep the first this many adversarial images per (method, ε).
        progress: called as ``progress(label, done, total)`` (images, one label per budget
            and method) before each batch and at the end.
        scoring: the fresh forward solve that scores every image (default
            :data:`~jiio_cli.tasks.adversarial.attacks.SCORING_SOLVE`).
        on_batch: called after each batch with the result over the images finished so
            far (the first ``k`` of them), before ``progress`` reports them.
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to attack")
    configs = (jiio, pgd, apgd or APGDConfig())
    clean = _CleanVerdicts.empty(n, images.device)
    scores = {
        (t, m): (
            _MethodScores.empty(n, images.device, images.dtype),
            torch.Generator().manual_seed(seed),
        )
        for t in range(len(threats))
        for m in methods
    }
    labels_of = {key: f"{key[1]} {threats[key[0]].label()}" for key in scores}
    per_method = {key: scored for key, (scored, _) in scores.items()}

    def result_over(k: int) -> SweepResult:
        return _sweep_result(
            labels[:k], clean, threats, methods, per_method, keep_examples, worst_label
        )

    for start in range(0, n, batch_size):
        if progress is not None:
            for label in labels_of.values():
                progress(label, start, n)
        sl = slice(start, min(start + batch_size, n))
        _score_clean(model, images[sl], sl, clean, scoring)
        for (t, method), (scored, generator) in scores.items():
            batch = (images[sl], labels[sl], sl)
            adversarial = _attack_batch(
                model, batch, method, threats[t], configs, generator, scored, scoring
            )
            if sum(kept.shape[0] for kept in scored.kept) < keep_examples:
                scored.kept.append(adversarial.cpu())
        # Built per batch only for a caller that keeps it (an interrupted run reports it).
        if on_batch is not None:
            on_batch(result_over(sl.stop))
    if progress is not None:
        for label in labels_of.values():
            progress(label, n, n)
    return result_over(n)


def _score_clean(
    model: DEQClassifier,
    images: Tensor,
    sl: slice,
    clean: _CleanVerdicts,
    scoring: SolverConfig | None,
) -> None:
    """Fresh verdicts on the clean batch ``images`` (B, c, S, S), the images ``sl`` of the
    set, into ``clean``; refuses a diverged solve."""
    verdict = classify(model, images, scoring)
    clean.predictions[sl] = verdict.predictions
    clean.converged[sl] = verdict.converged
    clean.failed[sl] = verdict.failed
    refuse_divergence(clean.failed[: sl.stop], "clean")


def _sweep_result(
    labels: Tensor,
    clean: _CleanVerdicts,
    threats: list[ThreatModel],
    methods: list[Method],
    scores: dict[tuple[int, Method], _MethodScores],
    keep_examples: int,
    worst_label: str,
) -> SweepResult:
    """The sweep's rows and per-image verdicts over the first ``k = len(labels)`` images
    (those every budget and method has finished), from the per-image ``scores``."""
    k = labels.shape[0]
    clean_pred = clean.predictions[:k]
    correct = clean_pred == labels
    converged = clean.converged[:k]
    result = SweepResult([], float((~converged).float().mean()), clean_pred.cpu())
    for t, threat in enumerate(threats):
        survived_all = correct.clone()
        unconverged_any = torch.zeros_like(correct)
        broken_by: list[list[str]] = [[] for _ in range(k)]
        for method in methods:
            scored = scores[(t, method)].first(k)
            robust = correct & (scored.predictions == labels)
            survived_all &= robust
            flipped = correct & (scored.predictions != labels)
            unconverged_any |= ~scored.eval_converged
            for i in torch.nonzero(flipped).flatten().tolist():
                broken_by[i].append(method)
            result.rows.append(_method_row(method, threat, scored, correct, robust, flipped))
            if keep_examples > 0:
                kept = min(keep_examples, k)
                result.examples[(method, threat.eps)] = (
                    torch.cat(scored.kept)[:kept],
                    scored.predictions[:kept].cpu(),
                )
        key = (threat.norm, threat.eps)
        result.broken_by[key] = broken_by
        result.eval_unconverged[key] = unconverged_any.cpu().tolist()
        if len(methods) > 1:
            rows = result.rows[-len(methods) :]
            result.rows.append(
                _worst_row(rows, survived_all, correct, unconverged_any, worst_label)
            )
    return result


@dataclass
class _CleanVerdicts:
    """Fresh verdicts on the clean images (N,): predictions, convergence and failure."""

    predictions: Tensor
    converged: Tensor
    failed: Tensor

    @classmethod
    def empty(cls, n: int, device: torch.device) -> _CleanVerdicts:
        return cls(
            predictions=torch.empty(n, dtype=torch.long, device=device),
            converged=torch.empty(n, dtype=torch.bool, device=device),
            failed=torch.empty(n, dtype=torch.bool, device=device),
        )


@dataclass
class _MethodScores:
    """One method at one budget over the whole set: per-image (N,) fresh predictions,
    perturbation norms, fresh-solve convergence and failure, attack non-convergence,
    iterations and f evaluations; the first kept adversarial batches; attack seconds."""

    predictions: Tensor
    norms: Tensor
    eval_converged: Tensor
    eval_failed: Tensor
    attack_unconverged: Tensor
    iterations: Tensor
    f_evals: Tensor
    kept: list[Tensor] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def empty(cls, n: int, device: torch.device, dtype: torch.dtype) -> _MethodScores:
        return cls(
            predictions=torch.empty(n, dtype=torch.long, device=device),
            norms=torch.empty(n, device=device, dtype=dtype),
            eval_converged=torch.empty(n, dtype=torch.bool, device=device),
            eval_failed=torch.empty(n, dtype=torch.bool, device=device),
            attack_unconverged=torch.empty(n, dtype=torch.bool, device=device),
            iterations=torch.empty(n, device=device),
            f_evals=torch.empty(n, device=device),
        )

    def first(self, k: int) -> _MethodScores:
        """The scores of the first ``k`` images (views), with the kept batches and seconds."""
        return _MethodScores(
            predictions=self.predictions[:k],
            norms=self.norms[:k],
            eval_converged=self.eval_converged[:k],
            eval_failed=self.eval_failed[:k],
            attack_unconverged=self.attack_unconverged[:k],
            iterations=self.iterations[:k],
            f_evals=self.f_evals[:k],
            kept=self.kept,
            seconds=self.seconds,
        )


def _attack_batch(
    model: DEQClassifier,
    batch: tuple[Tensor, Tensor, slice],
    method: Method,
    threat: ThreatModel,
    configs: tuple[JIIOAttackConfig, PGDConfig, APGDConfig],
    generator: torch.Generator,
    scores: _MethodScores,
    scoring: SolverConfig | None,
) -> Tensor:
    """Attack one batch ``(x (B, c, S, S), y (B,), its slice of the set)`` by ``method``
    with the (budget, method)'s ``generator`` and score the adversarial batch by a fresh
    solve into ``scores``; the adversarial batch (B, c, S, S). Refuses a diverged solve."""
    x, y, sl = batch
    run = partial(_run_method, method, model, x, y, threat, *configs, generator)
    outcome, took = timed(x.device, run)
    scores.seconds += took
    verdict: Classification = classify(model, outcome.images, scoring)
    scores.predictions[sl] = verdict.predictions
    scores.eval_converged[sl] = verdict.converged
    scores.eval_failed[sl] = verdict.failed
    scores.norms[sl] = perturbation_norms(outcome.images, x, threat.norm)
    scores.attack_unconverged[sl] = outcome.unconverged
    scores.iterations[sl] = outcome.iterations.float()
    scores.f_evals[sl] = outcome.f_evals.float()
    refuse_divergence(scores.eval_failed[: sl.stop], f"{method} {threat.label()} adversarial")
    return outcome.images


def _method_row(
    method: str,
    threat: ThreatModel,
    scores: _MethodScores,
    correct: Tensor,
    robust: Tensor,
    flipped: Tensor,
) -> AttackRow:
    """The row of one method at one budget from its per-image scores and the (N,) masks of
    clean-correct, robust and flipped images."""
    return AttackRow(
        method=method,
        norm=threat.norm,
        eps=threat.eps,
        clean_accuracy=float(correct.float().mean()),
        robust_accuracy=float(robust.float().mean()),
        success_rate=float(flipped.sum()) / max(int(correct.sum()), 1),
        mean_norm=float(scores.norms.mean()),
        max_norm=float(scores.norms.max()),
        seconds=scores.seconds,
        attack_unconverged=float(scores.attack_unconverged.float().mean()),
        eval_unconverged=float((~scores.eval_converged).float().mean()),
        mean_iterations=float(scores.iterations.mean()),
        mean_f_evals=float(scores.f_evals.mean()),
    )


def refuse_divergence(failed: Tensor, which: str) -> None:
    """A NaN/Inf forward solve makes any accuracy meaningless: stop with the indices."""
    if bool(failed.any()):
        bad = torch.nonzero(failed).flatten().tolist()
        shown = ", ".join(str(i) for i in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise JiioError(
            f"the classifier's forward solve diverged: NaN/Inf on {len(bad)} {which} "
            f"image(s) (index {shown}); the checkpoint is broken or the solve unstable"
        )


def _worst_row(
    rows: list[AttackRow], survived: Tensor, correct: Tensor, unconverged: Tensor, label: str
) -> AttackRow:
    """The per-image worst case of ``rows``: robust = survived every method; images with
    an unconverged adversarial verdict count as broken when they are ≥ 1 % of the set."""
    first = rows[0]
    share = float(unconverged.double().mean())
    # In integers: a float32 mean puts 1 of 100 just below 1 %.
    counted = 100 * int(unconverged.sum()) >= UNCONVERGED_PERCENT * unconverged.numel()
    if counted:
        survived = survived & ~unconverged
    flipped = correct & ~survived
    return AttackRow(
        method=label,
        norm=first.norm,
        eps=first.eps,
        clean_accuracy=first.clean_accuracy,
        robust_accuracy=float(survived.float().mean()),
        success_rate=float(flipped.sum()) / max(int(correct.sum()), 1),
        mean_norm=max(r.mean_norm for r in rows),
        max_norm=max(r.max_norm for r in rows),
        seconds=sum(r.seconds for r in rows),
        attack_unconverged=max(r.attack_unconverged for r in rows),
        eval_unconverged=share,
        mean_iterations=sum(r.mean_iterations for r in rows),
        mean_f_evals=sum(r.mean_f_evals for r in rows),
        unconverged_counted_broken=counted,
    )
