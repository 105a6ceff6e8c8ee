"""Adversarial training of a DEQ classifier (``jiio train --task adversarial``).

Each step solves the inner maximisation max_{x ∈ 𝒳} CE(h(z*(x)), y) for the batch —
by JIIO (default) or by PGD with full solves per step (``inner="pgd"``) — and then
minimises CE at the adversarial points (Madry et al.'s min-max training):

    L(θ) = mean_b CE(h(z*_θ(x_adv,b)), y_b) + w_J · ‖∂f/∂z‖²_F / dim(z).

x_adv is treated as a constant (Danskin's theorem: at an inner maximiser the gradient of
the max equals the gradient at the maximiser). The gradient through z* is implicit: an
adjoint solve for ∂CE/∂z*, warm-started from the attack's μ*, which is the adjoint of
−CE at the same point, so the least-squares rescale (≈ −1) makes it nearly exact and the
solve takes a few iterations (PAPER.md §4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.data import load_image_dataset, load_mnist5k
from jiio_cli.engine import SolverConfig, implicit_fixed_point, jacobian_penalty
from jiio_cli.errors import UsageError
from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.adversarial.attacks import (
    JIIOAttackConfig,
    PGDConfig,
    ThreatModel,
    classify,
    jiio_attack,
    pgd_attack,
)
from jiio_cli.training import (
    StepOutcome,
    TrainConfig,
    TrainRun,
    TrainState,
    run_training,
)

__all__ = [
    "AdversarialTrainConfig",
    "adversarial_loss",
    "evaluate_robustness",
    "load_labelled_data",
    "train_adversarial",
]


@dataclass(frozen=True)
class AdversarialTrainConfig:
    """Everything that defines a run of ``jiio train --task adversarial``.

    Attributes:
        threat: the training budget (norm and ε).
        model: the classifier's configuration.
        loop: epochs, batch size, learning rate, seed.
        inner: ``jiio`` or ``pgd`` for the inner maximisation.
        jiio: JIIO attack settings used in training.
        pgd: PGD settings used in training (``inner="pgd"``).
        warmup_epochs: ε grows linearly from 0 to its value over these epochs (a common
            way to let a fresh classifier learn the clean task first).
        jacobian_weight: w_J of the Jacobian regulariser.
        data: dataset path, or None for the bundled MNIST-5k.
        max_train: use only the first N training images.
        eval_size: held-out images scored each epoch.
    """

    threat: ThreatModel
    model: ClassifierConfig
    loop: TrainConfig
    inner: Literal["jiio", "pgd"] = "jiio"
    jiio: JIIOAttackConfig = field(default_factory=lambda: JIIOAttackConfig(iterations=20))
    pgd: PGDConfig = field(default_factory=lambda: PGDConfig(steps=10))
    warmup_epochs: int = 1
    jacobian_weight: float = 0.01
    data: str | None = None
    max_train: int | None = None
    eval_size: int = 500

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_labelled_data(
    data: str | None, image_size: int, channels: int, max_train: int | None, eval_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, held-out images, held-out labels).

    The bundled MNIST-5k comes with its fixed 4,500 / 500 split; a user's labelled set
    is split 90 / 10 in file order.
    """
    if data is None:
        train_x, train_y = load_mnist5k("train")
        held_x, held_y = load_mnist5k("heldout")
        if (image_size, channels) != (28, 1):
            raise UsageError("the bundled MNIST-5k is 28x28 greyscale; give --data for other sizes")
    else:
        images, labels = load_image_dataset(data, image_size=image_size, channels=channels)
        if labels is None:
            raise UsageError(
                f"--data {data} has no labels; use class subfolders, an .npz with 'labels', "
                "or MNIST IDX files with their labels file"
            )
        cut = max(1, int(0.9 * images.shape[0]))
        train_x, train_y, held_x, held_y = images[:cut], labels[:cut], images[cut:], labels[cut:]
        if held_x.shape[0] == 0:
            held_x, held_y = train_x[-1:], train_y[-1:]
    if max_train is not None:
        train_x, train_y = train_x[:max_train], train_y[:max_train]
    return train_x, train_y, held_x[:eval_size], held_y[:eval_size]


@dataclass
class AdversarialLoss:
    """A differentiable loss and the statistics of its inner maximisation."""

    loss: Tensor
    adversarial_accuracy: float
    unconverged: float


def adversarial_loss(
    model: DEQClassifier,
    images: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    inner: Literal["jiio", "pgd"],
    jiio: JIIOAttackConfig,
    pgd: PGDConfig,
    jacobian_weight: float,
    generator: torch.Generator,
) -> AdversarialLoss:
    """Training loss at adversarial points found by ``inner`` (everything but backward)."""
    if threat.eps == 0 or inner == "jiio":
        # μ* re-solved at the adversarial images: the adjoint solve below starts there.
        outcome = jiio_attack(model, images, labels, threat, replace(jiio, refine_adjoint=True))
    else:
        outcome = pgd_attack(model, images, labels, threat, pgd, generator)
    adjoint = SolverConfig(memory=5, max_iter=25, tol=1e-4)
    z = implicit_fixed_point(model.cell, outcome.z, outcome.images, adjoint, warm_start=outcome.mu)
    logits = model.head(z)
    loss = F.cross_entropy(logits, labels)
    if jacobian_weight > 0:
        penalty = jacobian_penalty(model.cell, outcome.z, outcome.images, generator=generator)
        loss = loss + jacobian_weight * penalty.mean()
    with torch.no_grad():
        adv_acc = float((logits.argmax(dim=1) == labels).float().mean())
    return AdversarialLoss(loss, adv_acc, float(outcome.unconverged.float().mean()))


def evaluate_robustness(
    model: DEQClassifier,
    images: Tensor,
    labels: Tensor,
    threat: ThreatModel,
    attack: JIIOAttackConfig,
    batch_size: int = 250,
) -> dict[str, float]:
    """Held-out clean accuracy and robust accuracy under the JIIO attack (fresh solves)."""
    clean_hits, robust_hits, unconverged = 0.0, 0.0, 0.0
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        clean = classify(model, x)
        outcome = jiio_attack(model, x, y, threat, attack)
        adv = classify(model, outcome.images)
        clean_hits += float((clean.predictions == y).sum())
        robust_hits += float(((adv.predictions == y) & (clean.predictions == y)).sum())
        unconverged += float((~clean.converged).sum())
    n = images.shape[0]
    return {
        "heldout_clean_accuracy": clean_hits / n,
        "heldout_robust_accuracy": robust_hits / n,
        "heldout_unconverged": unconverged / n,
    }


def train_adversarial(
    spec: AdversarialTrainConfig,
    device: torch.device,
    run: TrainRun,
) -> TrainState:
    """Train (or resume) an adversarially robust DEQ classifier; checkpoints in ``run.out``."""
    torch.manual_seed(spec.loop.seed)
    config = spec.model
    train_x, train_y, held_x, held_y = load_labelled_data(
        spec.data, config.image_size, config.image_channels, spec.max_train, spec.eval_size
    )
    top = int(max(train_y.max(), held_y.max()))
    if top >= config.num_classes or int(min(train_y.min(), held_y.min())) < 0:
        raise UsageError(
            f"labels must lie in 0..{config.num_classes - 1}, found {top}; "
            "set --num-classes to the number of classes"
        )
    model = DEQClassifier(config).to(device)
    train_x, train_y = train_x.to(device), train_y.to(device)
    held_x, held_y = held_x.to(device), held_y.to(device)
    batches = -(-train_x.shape[0] // spec.loop.batch_size)
    warmup_steps = spec.warmup_epochs * batches

    def step_fn(indices: Tensor, step: int, generator: torch.Generator) -> StepOutcome:
        idx = indices.to(device)
        ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        threat = ThreatModel(spec.threat.norm, spec.threat.eps * ramp)
        result = adversarial_loss(
            model,
            train_x[idx],
            train_y[idx],
            threat,
            spec.inner,
            spec.jiio,
            spec.pgd,
            spec.jacobian_weight,
            generator,
        )
        ok = bool(torch.isfinite(result.loss))
        metrics = {
            "eps": threat.eps,
            "adv_accuracy": result.adversarial_accuracy,
            "unconverged": result.unconverged,
        }
        return StepOutcome(result.loss, metrics, ok)

    eval_attack = JIIOAttackConfig()

    def eval_fn() -> dict[str, float]:
        return evaluate_robustness(model, held_x, held_y, spec.threat, eval_attack)

    meta = {
        "task": "adversarial",
        "model_kind": "classifier",
        "model_config": config.to_dict(),
        "training_config": {**spec.to_json(), "seed": spec.loop.seed},
    }
    return run_training(
        model=model,
        train_size=train_x.shape[0],
        step_fn=step_fn,
        eval_fn=eval_fn,
        config=spec.loop,
        run=run,
        name="adversarial",
        meta=meta,
        best_key="heldout_robust_accuracy",
    )
