"""Adversarial attacks on DEQ classifiers: the JIIO attack, PGD, and honest evaluation.

An attack on a classifier DEQ with logits h(z*(x)) looks for x in the threat set

    𝒳 = { x : ‖x − x₀‖_p ≤ ε,  0 ≤ x ≤ 1 }        (p = ∞ or 2)

that maximises the cross-entropy CE(h(z*(x)), y), i.e. minimises ℓ(z, x) = −CE.
L∞ attacks step along sign(∇_x), L2 attacks along ∇_x/‖∇_x‖₂ (PAPER.md §3); both project
back onto 𝒳 after every step.

* :func:`jiio_attack` solves it jointly with the equilibrium: one f evaluation and one VJP
  per iteration, Anderson on [z; x; μ], α_x relative to ε.
* :func:`pgd_attack` is the reference: each of its steps solves the forward DEQ and the
  adjoint to tolerance (the naive inner/outer method), with random restarts.
* :func:`classify` is the judge: a fresh forward solve from zeros, to a tight tolerance,
  at the returned points. Attack strength is only ever reported from it, because an
  attack that reads logits off an unconverged state can report false robustness.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.engine import (
    Box,
    Constraint,
    InputOptResult,
    InputProblem,
    JIIOConfig,
    L2Ball,
    LinfBall,
    NaiveConfig,
    SolverConfig,
    StepRule,
    StepSchedule,
    forward_solve,
    jiio_solve,
    naive_solve,
)
from jiio_cli.engine.problem import Objective
from jiio_cli.models import DEQClassifier

__all__ = [
    "COMMAND_ATTACK",
    "SCORING_SOLVE",
    "AttackOutcome",
    "Classification",
    "JIIOAttackConfig",
    "Norm",
    "PGDConfig",
    "ThreatModel",
    "attack_problem",
    "classify",
    "jiio_attack",
    "perturbation_norms",
    "pgd_attack",
    "random_start",
]

Norm = Literal["linf", "l2"]


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation budget: ‖x − x₀‖_norm ≤ eps inside the pixel box [0, 1]."""

    norm: Norm
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"unknown norm {self.norm!r}: expected 'linf' or 'l2'")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps must be finite and non-negative, got {self.eps}")

    @property
    def step_rule(self) -> StepRule:
        return "sign" if self.norm == "linf" else "l2"

    def constraint(self, clean: Tensor) -> Constraint:
        """The feasible set around clean images (B, c, S, S)."""
        ball = LinfBall if self.norm == "linf" else L2Ball
        return ball(center=clean, eps=self.eps, box=Box(0.0, 1.0))

    def label(self) -> str:
        return f"{'L∞' if self.norm == 'linf' else 'L2'} {self.eps:g}"


@dataclass(frozen=True)
class JIIOAttackConfig:
    """Settings of :func:`jiio_attack`.

    Attributes:
        iterations: augmented-map iterations T (the paper uses 80 on MNIST).
        memory: Anderson memory on [z; x; μ].
        alpha: α_x as a fraction of ε, before the switch.
        alpha_final: α_x as a fraction of ε after the switch at max(50, 5T/8)
            (None keeps ``alpha``).
        alpha_z, alpha_mu: damping of the z and μ blocks.
        tol: tolerance of the residuals reported for the solve.
        loss: ``ce`` maximises the cross-entropy; ``margin`` minimises the logit margin
            h_y − max_{j≠y} h_j, which keeps pushing once a sample is almost fooled.
        solver: ``anderson`` on [z; x; μ] or ``picard`` (damped plain iteration).
        graph: replay the iterations as a CUDA graph on a GPU (``SolverConfig.graph``).
        restarts: runs per sample; the first starts at the clean image, the others at
            uniform random points of the ball; each sample keeps the run that fooled the
            model, or else the one with the highest loss (as PGD's restarts).
        candidates: iterates of each run compared per sample, evenly spaced and ending
            with the last (1: the last iterate only). Each earlier candidate is scored by
            a forward solve at its x; a sample keeps the candidate that fools the model,
            or else the one with the highest loss. Far outside the budget a model was
            trained for, its equilibrium stops converging and the last iterate is often
            not the strongest (BENCHMARKS.md).
        refine_adjoint: re-solve μ at the returned images (``JIIOConfig.refine_adjoint``).
            An attack has no use for μ; adversarial training turns it on, because its
            backward's adjoint solve starts from the attack's μ.
    """

    iterations: int = 80
    memory: int = 20
    alpha: float = 0.25
    alpha_final: float | None = 0.05
    alpha_z: float = 0.8
    alpha_mu: float = 0.6
    tol: float = 1e-4
    loss: Literal["ce", "margin"] = "ce"
    solver: Literal["anderson", "picard"] = "anderson"
    graph: bool = False
    restarts: int = 1
    candidates: int = 1
    refine_adjoint: bool = False

    def engine_config(self, eps: float) -> JIIOConfig:
        scale = max(eps, 1e-12)
        final = None if self.alpha_final is None else self.alpha_final * scale
        return JIIOConfig(
            alpha_z=self.alpha_z,
            alpha_mu=self.alpha_mu,
            alpha_x=StepSchedule(self.alpha * scale, final),
            # The x step never shrinks (sign or normalised steps), so the x residual does
            # not fall and "best residual" would pick an early, weak iterate: keep the last.
            solver=SolverConfig(
                method=self.solver,
                memory=self.memory,
                max_iter=self.iterations,
                tol=self.tol,
                keep="last",
                graph=self.graph,
            ),
            refine=SolverConfig(memory=5, max_iter=30, tol=self.tol),
            refine_adjoint=self.refine_adjoint,
            checkpoints=self.checkpoints,
        )

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """Iterations of the earlier candidates (see ``candidates``)."""
        c, t = self.candidates, self.iterations
        return tuple(sorted({t * i // c for i in range(1, c)} - {0, t}))


CANDIDATE_SOLVE = SolverConfig(memory=10, max_iter=30, tol=1e-3)
"""Forward solve that scores an earlier candidate iterate of the JIIO attack."""

COMMAND_ATTACK = JIIOAttackConfig(loss="margin", solver="picard", candidates=4)
"""The JIIO attack of ``jiio attack`` with its default options (measured strongest; see
BENCHMARKS.md). ``JIIOAttackConfig()`` itself keeps the Anderson / cross-entropy attack
that adversarial training uses, with the last iterate only."""


@dataclass(frozen=True)
class PGDConfig:
    """Settings of :func:`pgd_attack` (projected gradient with full solves per step).

    Attributes:
        steps: gradient steps per restart.
        step_size: step length as a fraction of ε (default 2.5/steps, the usual choice
            that lets a step sequence cross the ball 2.5 times).
        restarts: independent runs; each sample keeps the run that fooled the model, or
            else the one with the highest loss.
        random_start: start from a uniform random point of the ball (the first restart
            too); otherwise the first restart starts at the clean image.
        solve: forward and adjoint solver settings of every step.
        loss: ``ce`` (standard PGD) or ``margin`` (see :func:`attack_objective`).
    """

    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    solve: SolverConfig = field(
        default_factory=lambda: SolverConfig(memory=5, max_iter=40, tol=1e-4)
    )
    loss: Literal["ce", "margin"] = "ce"

    @property
    def relative_step(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 / self.steps


@dataclass
class AttackOutcome:
    """Adversarial images and the engine's statistics of the run that produced them.

    Attributes:
        images: adversarial images (B, c, S, S), inside the threat set.
        z: the attack's equilibrium state at ``images`` (B, *z_shape).
        mu: the adjoint of the attack objective there (per sample, from the kept run).
        f_evals: f evaluations spent per sample (B,).
        iterations: outer iterations per sample (B,) (JIIO iterations or PGD steps,
            summed over restarts).
        unconverged: per sample, the attack's own final solve did not reach its
            tolerance on the z block (B,) bool.
    """

    images: Tensor
    z: Tensor
    mu: Tensor | None
    f_evals: Tensor
    iterations: Tensor
    unconverged: Tensor


@dataclass
class Classification:
    """A fresh forward solve's verdict on images (B, ...)."""

    logits: Tensor
    predictions: Tensor
    residual: Tensor
    converged: Tensor
    failed: Tensor


def attack_objective(
    model: DEQClassifier, labels: Tensor, loss: Literal["ce", "margin"] = "ce"
) -> Objective:
    """Per-sample ℓ(z, x) (B,) whose minimisation attacks: −CE(h(z), y), or the margin
    h_y(z) − max_{j≠y} h_j(z) (negative once the sample is misclassified)."""

    def cross_entropy(z: Tensor, _x: Tensor) -> Tensor:
        return -F.cross_entropy(model.head(z), labels, reduction="none")

    # Built once, outside the objective, which may be captured into a CUDA graph.
    own_class = F.one_hot(labels, model.config.num_classes).bool() if loss == "margin" else None

    def margin(z: Tensor, _x: Tensor) -> Tensor:
        logits = model.head(z)
        true = logits.gather(1, labels[:, None])[:, 0]
        others = logits.masked_fill(own_class, -torch.inf)
        return true - others.amax(dim=1)

    if loss not in ("ce", "margin"):
        raise ValueError(f"unknown attack loss {loss!r}: expected 'ce' or 'margin'")
    return cross_entropy if loss == "ce" else margin


def attack_problem(
    model: DEQClassifier,
    clean: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    start: Tensor,
    loss: Literal["ce", "margin"] = "ce",
) -> InputProblem:
    """The attack as an input-optimisation problem, starting at ``start``."""
    param = next(model.parameters())
    z0 = model.init_state(clean.shape[0], device=clean.device, dtype=param.dtype)
    return InputProblem(
        cell=model.cell,
        objective=attack_objective(model, labels, loss),
        z0=z0,
        x0=start,
        constraint=threat.constraint(clean),
        step_rule=threat.step_rule,
    )


def random_start(clean: Tensor, threat: ThreatModel, generator: torch.Generator) -> Tensor:
    """A uniformly random point of the ball around ``clean`` (B, c, S, S), clamped to the box.

    L∞: independent uniform offsets in [−ε, ε]. L2: a uniform point of the L2 ball
    (Gaussian direction, radius ε·u^{1/n}).
    """
    shape = clean.shape
    noise = torch.rand(shape, generator=generator, dtype=clean.dtype).to(clean.device)
    if threat.norm == "linf":
        offset = (2 * noise - 1) * threat.eps
    else:
        direction = torch.randn(shape, generator=generator, dtype=clean.dtype).to(clean.device)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        n = clean[0].numel()
        radius = noise.flatten(1)[:, :1].pow(1.0 / n).view(-1, 1, 1, 1) * threat.eps
        offset = direction * radius
    return threat.constraint(clean).project(clean + offset)


def _outcome(result: InputOptResult, tol: float) -> AttackOutcome:
    return AttackOutcome(
        images=result.x.detach(),
        z=result.z.detach(),
        mu=result.mu.detach(),
        f_evals=result.f_evals,
        iterations=result.iterations,
        unconverged=(result.residual_z > tol) | result.failed,
    )


@torch.no_grad()
def jiio_attack(
    model: DEQClassifier,
    clean: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    config: JIIOAttackConfig | None = None,
    generator: torch.Generator | None = None,
) -> AttackOutcome:
    """Attack by JIIO from the clean images (B, c, S, S) with labels (B,), and from
    ``config.restarts − 1`` random starts (drawn from ``generator``)."""
    config = config or JIIOAttackConfig()
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    engine = config.engine_config(threat.eps)
    objective = attack_objective(model, labels, config.loss)
    strongest = _StrongestRun(model, labels)
    for restart in range(config.restarts):
        start = clean if restart == 0 else random_start(clean, threat, generator)
        problem = attack_problem(model, clean, labels, threat, start, config.loss)
        result = jiio_solve(problem, engine)
        outcome = _outcome(result, config.tol)
        if not result.checkpoints:
            strongest.offer(result.z, result.objective, outcome)
            continue
        # Candidates are judged alike, as the final evaluation will judge them: by a
        # forward solve from zeros at each one's x (the last iterate's own z is
        # warm-started, which far outside the model's budget can give another verdict).
        zeros = torch.zeros_like(result.z)
        last = forward_solve(model.cell, result.x, zeros, CANDIDATE_SOLVE)
        strongest.offer(
            last.z,
            objective(last.z, result.x),
            dataclasses.replace(outcome, f_evals=outcome.f_evals + last.stats.iterations),
        )
        for _, images in result.checkpoints.values():
            fwd = forward_solve(model.cell, images, zeros, CANDIDATE_SOLVE)
            candidate = AttackOutcome(
                images=images,
                z=fwd.z,
                mu=None,
                f_evals=fwd.stats.iterations,
                iterations=torch.zeros_like(outcome.iterations),
                unconverged=~fwd.stats.converged,
            )
            strongest.offer(fwd.z, objective(fwd.z, images), candidate)
    return strongest.best()


class _StrongestRun:
    """Per sample, the strongest of several attack runs or candidates: one that fooled
    the model (by the equilibrium it was offered with) beats one that did not; between
    two that both did, or both did not, the higher attack loss wins (so among fooling
    candidates the most confidently misclassified is kept)."""

    def __init__(self, model: DEQClassifier, labels: Tensor) -> None:
        self.model = model
        self.labels = labels
        self.outcome: AttackOutcome | None = None
        self.fooled = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
        self.loss = torch.full((labels.shape[0],), -math.inf, device=labels.device)

    def offer(self, z: Tensor, objective: Tensor, outcome: AttackOutcome) -> None:
        """Consider a run (or candidate) with equilibrium ``z`` and attack objective (B,)."""
        with torch.no_grad():
            logits = self.model.head(z)
        loss = -objective
        fooled = logits.argmax(dim=1) != self.labels
        best = self.outcome
        if best is None:
            self.outcome, self.fooled, self.loss = outcome, fooled, loss
            return
        better = (fooled & ~self.fooled) | ((fooled == self.fooled) & (loss > self.loss))

        def pick(new: Tensor, old: Tensor) -> Tensor:
            return torch.where(better.view(-1, *([1] * (new.ndim - 1))), new, old)

        both_mu = outcome.mu is not None and best.mu is not None
        self.outcome = AttackOutcome(
            images=pick(outcome.images, best.images),
            z=pick(outcome.z, best.z),
            mu=pick(outcome.mu, best.mu) if both_mu else None,  # type: ignore[arg-type]
            f_evals=best.f_evals + outcome.f_evals,
            iterations=best.iterations + outcome.iterations,
            unconverged=torch.where(better, outcome.unconverged, best.unconverged),
        )
        self.fooled = self.fooled | fooled
        self.loss = torch.where(better, loss, self.loss)

    def best(self) -> AttackOutcome:
        assert self.outcome is not None, "no run was offered"
        return self.outcome


def pgd_attack(
    model: DEQClassifier,
    clean: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    config: PGDConfig | None = None,
    generator: torch.Generator | None = None,
) -> AttackOutcome:
    """PGD with a full forward and adjoint solve per step, over ``config.restarts`` runs."""
    config = config or PGDConfig()
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    naive = NaiveConfig(
        method="pgd",
        steps=config.steps,
        lr=config.relative_step * max(threat.eps, 1e-12),
        forward=config.solve,
        adjoint=config.solve,
    )
    strongest = _StrongestRun(model, labels)
    for restart in range(config.restarts):
        use_random = config.random_start or restart > 0
        start = random_start(clean, threat, generator) if use_random else clean
        problem = attack_problem(model, clean, labels, threat, start, config.loss)
        with torch.no_grad():
            result = naive_solve(problem, naive)
        strongest.offer(result.z, result.objective, _outcome(result, config.solve.tol))
    return strongest.best()


SCORING_SOLVE = SolverConfig(memory=10, max_iter=200, tol=1e-5)
"""The fresh forward solve that scores clean and adversarial images: from zeros, to a
tight tolerance, with a budget a trained classifier needs far less of."""


def classify(
    model: DEQClassifier,
    images: Tensor,
    solve: SolverConfig | None = None,
) -> Classification:
    """Predictions from a fresh forward solve from zeros (default :data:`SCORING_SOLVE`)."""
    solve = solve or SCORING_SOLVE
    param = next(model.parameters())
    z0 = model.init_state(images.shape[0], device=images.device, dtype=param.dtype)
    with torch.no_grad():
        fwd = forward_solve(model.cell, images, z0, solve)
        logits = model.head(fwd.z)
    residual = fwd.stats.residual[:, 0]
    return Classification(
        logits=logits,
        predictions=logits.argmax(dim=1),
        residual=residual,
        converged=fwd.stats.converged & ~fwd.stats.failed,
        failed=fwd.stats.failed | ~torch.isfinite(logits).all(dim=1),
    )


def perturbation_norms(adversarial: Tensor, clean: Tensor, norm: Norm) -> Tensor:
    """‖x_adv − x₀‖ per sample (B,) in the threat model's norm."""
    d = (adversarial - clean).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
