"""The one training loop: batches, Adam with a cosine schedule, checkpoints, exact resume.

Reproducibility is by construction, not by saving RNG states: the data order of epoch e
comes from a generator seeded with (seed, e) and every random draw of step s (corruption,
Hutchinson probes) from one seeded with (seed, s). A run resumed from a checkpoint
therefore replays exactly the batches, noise and updates of an uninterrupted run.

Checkpoints are safetensors files ``<name>-last`` (after every epoch and every
``save_every`` steps) and ``<name>-best`` (best held-out metric), written atomically.
They hold the model (``model.*``), Adam's moments (``optim.*``) and, in the metadata,
the model and training configs, the position (epoch, step) and the loss history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jiio_cli.checkpoint import load_checkpoint, load_module_state, save_checkpoint
from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "StepOutcome",
    "TrainConfig",
    "TrainState",
    "checkpoint_paths",
    "derived_generator",
    "run_training",
]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the loop itself (task settings live with the task)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.0
    seed: int = 0
    save_every: int = 0
    max_bad_steps: int = 5


@dataclass
class StepOutcome:
    """What a task's step function returns: a loss to minimise and scalars to show."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    ok: bool = True


@dataclass
class TrainState:
    """Position of a run: next epoch, batch within it, global step, history."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_metric: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)


def derived_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from (seed, *keys), independent across keys."""
    value = seed
    for key in keys:
        value = (value * 1_000_003 + key + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def checkpoint_paths(out: Path, name: str) -> tuple[Path, Path]:
    return out / f"{name}-last.safetensors", out / f"{name}-best.safetensors"


def _lr_at(config: TrainConfig, step: int, total: int) -> float:
    progress = min(step / max(total, 1), 1.0)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


def _optimizer_tensors(
    optimizer: torch.optim.Adam, params: list[nn.Parameter]
) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for i, p in enumerate(params):
        state = optimizer.state.get(p)
        if state:
            tensors[f"optim.{i}.exp_avg"] = state["exp_avg"]
            tensors[f"optim.{i}.exp_avg_sq"] = state["exp_avg_sq"]
            tensors[f"optim.{i}.step"] = torch.as_tensor(state["step"], dtype=torch.float64)
    return tensors


def _restore_optimizer(
    optimizer: torch.optim.Adam, params: list[nn.Parameter], tensors: dict[str, Tensor]
) -> None:
    for i, p in enumerate(params):
        key = f"optim.{i}.exp_avg"
        if key in tensors:
            optimizer.state[p] = {
                "step": tensors[f"optim.{i}.step"].to(torch.float32).reshape(()),
                "exp_avg": tensors[key].to(p.device, p.dtype),
                "exp_avg_sq": tensors[f"optim.{i}.exp_avg_sq"].to(p.device, p.dtype),
            }


def _save(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Adam,
    state: TrainState,
    meta: dict[str, Any],
    metrics: dict[str, float],
) -> None:
    params = list(model.parameters())
    tensors = {f"model.{k}": v.detach() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(optimizer, params))
    extra = dict(meta.get("extra", {}))
    extra["train_state"] = json.dumps({k: v for k, v in asdict(state).items() if k != "history"})
    extra["history"] = json.dumps(state.history)
    save_checkpoint(
        path,
        tensors,
        task=meta["task"],
        model_kind=meta["model_kind"],
        model_config=meta["model_config"],
        step=state.step,
        metrics=metrics,
        training_config=meta["training_config"],
        extra=extra,
    )


def load_training_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Adam, task: str
) -> TrainState:
    """Restore model, optimizer and position from a ``*-last`` checkpoint."""
    ckpt = load_checkpoint(path, expected_task=task)
    prefix = "model."
    load_module_state(
        model, {k[len(prefix) :]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)}
    )
    _restore_optimizer(optimizer, list(model.parameters()), ckpt.tensors)
    try:
        raw = json.loads(ckpt.extra["train_state"])
        history = json.loads(ckpt.extra.get("history", "[]"))
    except (KeyError, json.JSONDecodeError):
        raise JiioError(f"checkpoint {path} holds no training position to resume from") from None
    return TrainState(history=history, **raw)


def run_training(
    *,
    model: nn.Module,
    train_size: int,
    step_fn: Callable[[Tensor, int, torch.Generator], StepOutcome],
    eval_fn: Callable[[], dict[str, float]],
    config: TrainConfig,
    out: Path,
    name: str,
    meta: dict[str, Any],
    best_key: str,
    resume: bool,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stop_after_steps: int | None = None,
) -> TrainState:
    """Train ``model`` for ``config.epochs`` epochs.

    Args:
        model: the module being trained (its parameters are optimised).
        train_size: number of training samples; batches are index tensors into them.
        step_fn: ``(indices, step, generator) -> StepOutcome`` computing the loss of one
            batch; ``ok=False`` (e.g. a solve that returned NaN) skips the update.
        eval_fn: held-out metrics, run after each epoch; ``best_key`` (higher is better)
            picks the ``-best`` checkpoint.
        config: loop settings.
        out: run folder; must be new or empty unless ``resume``.
        name: checkpoint file stem.
        meta: ``task``, ``model_kind``, ``model_config``, ``training_config`` (and
            optional ``extra``) for the checkpoint metadata.
        best_key: metric that selects the best checkpoint.
        resume: continue from ``<out>/<name>-last.safetensors``.
        progress: called with a dict after each step and each epoch (for the UI).
        stop_after_steps: stop (after saving) once this many global steps are done;
            used by tests to interrupt a run.
    """
    last_path, best_path = checkpoint_paths(out, name)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    if resume:
        if not last_path.exists():
            raise UsageError(f"nothing to resume: {last_path} does not exist")
        state = load_training_state(last_path, model, optimizer, meta["task"])
    else:
        if out.exists() and any(out.iterdir()):
            raise UsageError(
                f"run folder {out} is not empty; pass --resume to continue it "
                "or choose another --out"
            )
        out.mkdir(parents=True, exist_ok=True)
        state = TrainState()

    try:
        return _train_epochs(
            model,
            optimizer,
            params,
            state,
            train_size,
            step_fn,
            eval_fn,
            config,
            last_path,
            best_path,
            meta,
            best_key,
            progress,
            stop_after_steps,
        )
    except KeyboardInterrupt:
        # Ctrl-C: keep what was learned so far; `--resume` continues from here.
        _save(last_path, model, optimizer, state, meta, {})
        raise


def _train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Adam,
    params: list[nn.Parameter],
    state: TrainState,
    train_size: int,
    step_fn: Callable[[Tensor, int, torch.Generator], StepOutcome],
    eval_fn: Callable[[], dict[str, float]],
    config: TrainConfig,
    last_path: Path,
    best_path: Path,
    meta: dict[str, Any],
    best_key: str,
    progress: Callable[[dict[str, Any]], None] | None,
    stop_after_steps: int | None,
) -> TrainState:
    batches_per_epoch = math.ceil(train_size / config.batch_size)
    total_steps = batches_per_epoch * config.epochs
    bad_streak = 0
    metrics: dict[str, float] = {}
    while state.epoch < config.epochs:
        order = torch.randperm(train_size, generator=derived_generator(config.seed, 1, state.epoch))
        model.train()
        for b in range(state.batch_in_epoch, batches_per_epoch):
            indices = order[b * config.batch_size : (b + 1) * config.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(config, state.step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            outcome = step_fn(indices, state.step, derived_generator(config.seed, 2, state.step))
            loss_value = float(outcome.loss.detach())
            if outcome.ok and math.isfinite(loss_value):
                outcome.loss.backward()
                finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
            else:
                finite = False
            if finite:
                optimizer.step()
                bad_streak = 0
            else:
                bad_streak += 1
                if bad_streak >= config.max_bad_steps:
                    raise JiioError(
                        f"{bad_streak} consecutive batches failed (non-finite loss or solve); "
                        "stopping without saving; lower --lr or raise the solver's iterations"
                    )
            state.step += 1
            state.batch_in_epoch = b + 1
            state.history.append({"step": state.step, "loss": loss_value, **outcome.metrics})
            if progress is not None:
                progress(
                    {
                        "event": "step",
                        "epoch": state.epoch,
                        "batch": b + 1,
                        "batches": batches_per_epoch,
                        "loss": loss_value,
                        **outcome.metrics,
                    }
                )
            stop = stop_after_steps is not None and state.step >= stop_after_steps
            if (config.save_every and state.step % config.save_every == 0) or stop:
                _save(last_path, model, optimizer, state, meta, metrics)
            if stop:
                return state
        model.eval()
        metrics = eval_fn()
        state.epoch += 1
        state.batch_in_epoch = 0
        state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
        improved = metrics.get(best_key, -math.inf) > state.best_metric
        if improved:
            state.best_metric = metrics[best_key]
        _save(last_path, model, optimizer, state, meta, metrics)
        if improved:
            _save(best_path, model, optimizer, state, meta, metrics)
        if progress is not None:
            progress({"event": "epoch", "epoch": state.epoch, **metrics})
    return state
