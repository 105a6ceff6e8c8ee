"""A small meta-model checkpoint for tests (adaptation works on any weights)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from jiio_cli.checkpoint import save_checkpoint
from jiio_cli.engine import JIIOConfig, SolverConfig, StepSchedule
from jiio_cli.models import FiLMClassifier, MetaConfig, ProtoNet, ProtoNetConfig
from jiio_cli.tasks.fewshot.classification import AdaptConfig, query_states
from jiio_cli.tasks.fewshot.training import MetaTrainConfig
from jiio_cli.training import TrainConfig

TINY_META = MetaConfig(context_dim=8, ways=5, channels=8, image_size=12, head_context=True)


def _save_untrained(
    path: Path, model: FiLMClassifier | ProtoNet, training_config: dict[str, Any]
) -> None:
    """``model`` at step 0 as a ``meta`` checkpoint of its kind, like ``jiio train`` saves it."""
    save_checkpoint(
        path,
        {f"model.{k}": v for k, v in model.state_dict().items()},
        task="meta",
        model_kind=model.kind,
        model_config=model.config.to_dict(),
        step=0,
        metrics={},
        training_config=training_config,
    )


def save_tiny_meta_model(path: Path, config: MetaConfig = TINY_META) -> None:
    """An untrained 5-way meta-model on 12×12 images, saved like ``jiio train`` does."""
    torch.manual_seed(0)
    spec = MetaTrainConfig(model=config, loop=TrainConfig(), inner_iters=10)
    _save_untrained(path, FiLMClassifier(config), spec.to_json())


def write_meta_folders(tmp: Path) -> None:
    """Broken few-shot folders: an empty class, mixed image sizes, an empty query folder;
    and a Prototypical Network checkpoint (a baseline, not a meta-model)."""
    save_tiny_meta_model(tmp / "meta.safetensors")
    for name, sizes in (
        ("support_empty_class", [(20, 20), None]),
        ("support_mixed", [(20, 20), (24, 20)]),
    ):
        for k, size in enumerate(sizes):
            folder = tmp / name / f"class_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            if size is not None:
                Image.fromarray(np.zeros(size, np.uint8)).save(folder / "0.png")
    save_tiny_protonet(tmp / "protonet.safetensors")
    good = tmp / "support_good"
    for k in range(2):
        (good / f"class_{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20), 40 * k, np.uint8)).save(good / f"class_{k}" / "0.png")
    (tmp / "query_empty").mkdir(exist_ok=True)


TINY_CONV4 = MetaConfig(
    context_dim=4,
    ways=5,
    channels=8,
    image_size=16,
    readout="centroids",
    support_loss="pseudo-queries",
    pseudo_copies=1,
    pseudo_warp=0.0,
    pseudo_affine=1.0,
    encoder="conv4",
    hidden=16,
    preprocess="crop",
)


def save_tiny_conv4_model(path: Path, config: MetaConfig = TINY_CONV4) -> None:
    """An untrained conv4 FiLM DEQ (crop-to-ink preprocessing), saved like ``jiio train``."""
    save_tiny_meta_model(path, config)


def save_tiny_protonet(path: Path) -> None:
    """An untrained Prototypical Network on 16×16 images, saved like ``jiio train``."""
    torch.manual_seed(0)
    config = ProtoNetConfig(channels=8, image_size=16, preprocess="crop")
    _save_untrained(path, ProtoNet(config), {})


def tight_adapt_settings(
    context_weight: float, alpha_x: float, max_iter: int, tol: float
) -> AdaptConfig:
    """Adaptation settings for float64 checks: JIIO at step ``alpha_x`` for ``max_iter``
    iterations to ``tol``, its refinement and the read-out solved to 1e-11."""
    tight = SolverConfig(memory=8, max_iter=300, tol=1e-11)
    return AdaptConfig(
        context_weight=context_weight,
        jiio=JIIOConfig(
            alpha_x=StepSchedule(alpha_x),
            solver=SolverConfig(memory=5, max_iter=max_iter, tol=tol),
            refine=tight,
        ),
        forward=tight,
    )


def stationarity_gap(
    model: FiLMClassifier,
    objective: Callable[[Tensor, Tensor], Tensor],
    rows: Tensor,
    x: Tensor,
    entries: Sequence[int],
    step: float,
    solver: SolverConfig,
) -> Tensor:
    """How far (E, B) zero lies from the interval spanned by the backward and forward
    differences of the reduced objective J(x) = ℓ(z*(x), x) along each of ``entries`` of
    x (B, D), the fixed points of ``rows`` solved once at x and again at x ± step.

    On a smooth stretch both differences are the slope, so the gap is |∂J/∂x_entry| up
    to O(step). J is only piecewise smooth (ReLU kinks), and where a kink lies within one
    step of x a central difference mixes two pieces' slopes however small the step: x is
    still stationary if the slope of its own piece vanishes (one difference near zero) or
    the slopes change sign across the kink (the differences straddle zero), and then the
    gap is zero or as small as that one difference."""
    here = objective(query_states(model, rows, x, solver), x)
    gaps = []
    for entry in entries:
        e = torch.zeros_like(x)
        e[:, entry] = step
        up = objective(query_states(model, rows, x + e, solver), x + e)
        down = objective(query_states(model, rows, x - e, solver), x - e)
        backward, forward = (here - down) / step, (up - here) / step
        low, high = torch.minimum(backward, forward), torch.maximum(backward, forward)
        gaps.append(low.clamp(min=0) + (-high).clamp(min=0))
    return torch.stack(gaps)
