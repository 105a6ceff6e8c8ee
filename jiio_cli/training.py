"""The one training loop: batches, Adam with a cosine schedule, checkpoints, exact resume.

Reproducibility is by construction, not by saving RNG states: the data order of epoch e
comes from a generator seeded with (seed, e) and every random draw of step s (corruption,
Hutchinson probes) from one seeded with (seed, s). A run resumed from a checkpoint
therefore replays exactly the batches, noise and updates of an uninterrupted run.

Several processes (``torchrun``; see :mod:`jiio_cli.distributed`): the global batch of
step s is the same set of samples whatever the world size; each rank takes a contiguous
shard of it, the parameter gradients are all-reduced weighted by shard size (so the
update is the one a single process would make on the whole batch), and only rank 0
prints progress, evaluates and writes checkpoints. A checkpoint holds the global
position (epoch, batch, step), so it resumes on any number of ranks.

Precision: ``TrainConfig.precision`` ``fp16`` scales the loss with a
``torch.amp.GradScaler`` (its state is checkpointed); the task runs its cell under
autocast (:mod:`jiio_cli.models.precision`).

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

from jiio_cli.checkpoint import (
    MODEL_PREFIX,
    load_checkpoint,
    load_module_state,
    model_tensors,
    save_checkpoint,
)
from jiio_cli.distributed import (
    BatchShard,
    DistributedContext,
    all_gather_objects,
    all_reduce_gradients,
    broadcast_module,
    broadcast_object,
    current_context,
    picklable_error,
    shard_bounds,
)
from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "BatchShard",
    "StepOutcome",
    "TrainConfig",
    "TrainRun",
    "TrainState",
    "Trainer",
    "checkpoint_paths",
    "derived_generator",
    "load_training_state",
    "run_training",
]

StepFn = Callable[[Tensor, int, torch.Generator], "StepOutcome"]
ShardStepFn = Callable[[BatchShard, int], "StepOutcome"]
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the loop itself (task settings live with the task).

    ``precision`` is ``fp32``, ``bf16`` or ``fp16``; the loop only acts on ``fp16``
    (loss scaling), the task applies autocast to its cell.

    ``max_grad_norm`` > 0 rescales the (all-reduced, unscaled) parameter gradient to at
    most that Euclidean norm before the Adam step; 0 leaves it alone.

    ``init`` is the path of a checkpoint whose model weights start a new run (fine-tuning
    under other options): the same kind of model with the same parameter names and
    shapes; the optimiser, learning-rate schedule and step count start afresh. A resumed
    run restores its own weights and does not read it.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.0
    seed: int = 0
    save_every: int = 0
    max_bad_steps: int = 5
    precision: str = "fp32"
    max_grad_norm: float = 0.0
    init: str | None = None


@dataclass(frozen=True)
class TrainRun:
    """Where a training run keeps its checkpoints and how this call drives it: the part of
    every task's training entry point (``train_inverse(spec, device, run)`` and its
    siblings) that is the loop's, not the task's.

    Attributes:
        out: run folder; must be new or empty unless ``resume``.
        resume: continue from ``<out>/<name>-last.safetensors``.
        progress: called with a dict (for the UI; rank 0 only): ``plan`` before the first
            step (task, data size, steps, device, checkpoint paths), ``step`` after each
            step (global ``step`` of ``steps``, loss, the task's metrics), ``epoch`` after
            each held-out evaluation, and ``interrupted`` (the checkpoint just saved) when
            Ctrl-C stops the run.
        stop_after_steps: stop (after saving) once this many global steps are done;
            used by tests to interrupt a run.
    """

    out: Path
    resume: bool = False
    progress: ProgressFn | None = None
    stop_after_steps: int | None = None


Trainer = Callable[[Any, torch.device, TrainRun], "TrainState"]
"""A task's training entry point, ``(spec, device, run) -> final state``
(``train_inverse``, ``train_adversarial``, ``train_meta``, ``train_sinusoid``)."""


@dataclass
class StepOutcome:
    """What a task's step function returns: a loss to minimise and scalars to show.

    ``loss`` and every metric must be means over the step's samples: with several
    ranks they are averaged weighted by shard size.
    """

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
    scaler: torch.amp.GradScaler | None = None,
    world_size: int = 1,
) -> None:
    params = list(model.parameters())
    tensors = {f"{MODEL_PREFIX}{k}": v.detach() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(optimizer, params))
    extra = dict(meta.get("extra", {}))
    extra["train_state"] = json.dumps({k: v for k, v in asdict(state).items() if k != "history"})
    extra["history"] = json.dumps(state.history)
    extra["world_size"] = str(world_size)
    if scaler is not None and scaler.is_enabled():
        extra["grad_scaler"] = json.dumps(scaler.state_dict())
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


@dataclass
class _Resumed:
    """What a ``*-last`` checkpoint restores (CPU tensors, so it can be broadcast)."""

    tensors: dict[str, Tensor]
    state: TrainState
    scaler_state: dict[str, Any] | None


def _read_resume_point(path: Path, task: str) -> _Resumed:
    ckpt = load_checkpoint(path, expected_task=task)
    try:
        raw = json.loads(ckpt.extra["train_state"])
        history = json.loads(ckpt.extra.get("history", "[]"))
        scaler = json.loads(ckpt.extra["grad_scaler"]) if "grad_scaler" in ckpt.extra else None
    except (KeyError, json.JSONDecodeError):
        raise JiioError(f"checkpoint {path} holds no training position to resume from") from None
    return _Resumed(dict(ckpt.tensors), TrainState(history=history, **raw), scaler)


def _apply_resume_point(
    resumed: _Resumed, model: nn.Module, optimizer: torch.optim.Adam
) -> TrainState:
    load_module_state(model, model_tensors(resumed.tensors))
    _restore_optimizer(optimizer, list(model.parameters()), resumed.tensors)
    return resumed.state


def load_training_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Adam, task: str
) -> TrainState:
    """Restore model, optimizer and position from a ``*-last`` checkpoint."""
    return _apply_resume_point(_read_resume_point(path, task), model, optimizer)


def _initial_weights(path: Path, model_kind: str) -> dict[str, Tensor]:
    """The model tensors of the checkpoint ``path`` (``--init``), which must hold a
    ``model_kind`` model (any task: a denoising decoder may start an inpainting run)."""
    ckpt = load_checkpoint(path)
    if ckpt.model_kind != model_kind:
        raise UsageError(
            f"--init {path} holds a {ckpt.model_kind!r} model; this run trains a {model_kind!r}"
        )
    return model_tensors(ckpt.tensors)


def _prepare_run_folder(out: Path, last_path: Path, task: str, resume: bool) -> _Resumed | None:
    """Check the run folder (rank 0 only); the resume point when resuming."""
    if resume:
        if not last_path.exists():
            raise UsageError(f"nothing to resume: {last_path} does not exist")
        return _read_resume_point(last_path, task)
    if out.exists() and any(out.iterdir()):
        raise UsageError(
            f"run folder {out} is not empty; pass --resume to continue it or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    return None


def _rank0_then_share(context: DistributedContext, work: Callable[[], Any]) -> Any:
    """Run ``work`` on rank 0 and hand its result (or its error) to every rank."""
    if not context.enabled:
        return work()
    outcome: Any = None
    if context.is_main:
        try:
            outcome = work()
        except Exception as exc:  # re-raised on every rank by broadcast_object
            outcome = picklable_error(exc)
    return broadcast_object(outcome)


def run_training(
    *,
    model: nn.Module,
    train_size: int,
    step_fn: StepFn | None = None,
    eval_fn: Callable[[], dict[str, float]],
    config: TrainConfig,
    run: TrainRun,
    name: str,
    meta: dict[str, Any],
    best_key: str,
    shard_step_fn: ShardStepFn | None = None,
    context: DistributedContext | None = None,
) -> TrainState:
    """Train ``model`` for ``config.epochs`` epochs.

    Args:
        model: the module being trained (its parameters are optimised).
        train_size: number of training samples; batches are index tensors into them.
        step_fn: ``(indices, step, generator) -> StepOutcome`` computing the mean loss of
            this rank's part of the batch; ``ok=False`` (e.g. a solve that returned NaN)
            skips the update. With several ranks its generator is seeded per rank.
        eval_fn: held-out metrics, run after each epoch (on rank 0 only); ``best_key``
            (higher is better) picks the ``-best`` checkpoint.
        config: loop settings.
        run: the run folder, whether to resume, the progress callback and where to stop
            (see :class:`TrainRun`).
        name: checkpoint file stem.
        meta: ``task``, ``model_kind``, ``model_config``, ``training_config`` (and
            optional ``extra``) for the checkpoint metadata.
        best_key: metric that selects the best checkpoint.
        shard_step_fn: instead of ``step_fn``: ``(shard, step) -> StepOutcome`` with a
            :class:`BatchShard`, for tasks that draw randomness for the global batch
            so that a run does not depend on the world size.
        context: the process group (default: the initialised one, or a single process).
    """
    if (step_fn is None) == (shard_step_fn is None):
        raise ValueError("give exactly one of step_fn and shard_step_fn")
    context = context if context is not None else current_context()
    out, progress = run.out, run.progress
    last_path, best_path = checkpoint_paths(out, name)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    device_type = params[0].device.type if params else "cpu"
    scaler = torch.amp.GradScaler(device_type, enabled=config.precision == "fp16")

    state = _starting_state(
        model, optimizer, scaler, context, config, meta, out, last_path, run.resume
    )
    call_step = _shard_step_of(step_fn, shard_step_fn)
    loop = _Loop(
        model, optimizer, params, scaler, context, config, meta, last_path, best_path, progress
    )
    plan = _plan_event(meta["task"], train_size, config, state, params, last_path, best_path)
    steps = plan["steps"]
    if progress is not None and context.is_main:
        progress(plan)
    try:
        return loop.run(state, train_size, call_step, eval_fn, best_key, run.stop_after_steps)
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM turned into it by the CLI): keep what was learned so far;
        # `--resume` continues from here.
        if context.is_main:
            loop.save(last_path, state, {})
            if progress is not None:
                progress(_interrupted_event(state, steps, last_path))
        raise


def _starting_state(
    model: nn.Module,
    optimizer: torch.optim.Adam,
    scaler: torch.amp.GradScaler,
    context: DistributedContext,
    config: TrainConfig,
    meta: dict[str, Any],
    out: Path,
    last_path: Path,
    resume: bool,
) -> TrainState:
    """Where a run starts, the same on every rank: the ``-last`` checkpoint's weights,
    Adam moments, loss scale and position when resuming; otherwise a fresh state from
    the ``--init`` weights (or rank 0's own, broadcast to the others)."""
    resumed = _rank0_then_share(
        context, lambda: _prepare_run_folder(out, last_path, meta["task"], resume)
    )
    if resumed is not None:
        state = _apply_resume_point(resumed, model, optimizer)
        if resumed.scaler_state is not None and scaler.is_enabled():
            scaler.load_state_dict(resumed.scaler_state)
        return state
    if config.init is not None:
        weights = _rank0_then_share(
            context, lambda: _initial_weights(Path(config.init), meta["model_kind"])
        )
        device = next(p for p in model.parameters() if p.requires_grad).device
        try:
            load_module_state(model, {k: v.to(device) for k, v in weights.items()})
        except JiioError as exc:
            raise UsageError(f"--init {config.init}: {exc}") from None
    if context.enabled:
        broadcast_module(model)  # same start on every rank, whatever each one seeded
    return TrainState()


def _shard_step_of(step_fn: StepFn | None, shard_step_fn: ShardStepFn | None) -> ShardStepFn:
    """The task's step as a function of the batch shard (``step_fn`` sees only this
    rank's indices and its per-rank generator)."""
    if shard_step_fn is not None:
        return shard_step_fn
    assert step_fn is not None

    def call_step(shard: BatchShard, step: int) -> StepOutcome:
        return step_fn(shard.indices, step, shard.local_generator)

    return call_step


def _plan_event(
    task: str,
    train_size: int,
    config: TrainConfig,
    state: TrainState,
    params: list[nn.Parameter],
    last_path: Path,
    best_path: Path,
) -> dict[str, Any]:
    """The ``plan`` progress event: what the run will do and where its checkpoints go."""
    batches = math.ceil(train_size / config.batch_size)
    device = str(params[0].device) if params else "cpu"
    return {
        "event": "plan",
        "task": task,
        "train_size": train_size,
        "epochs": config.epochs,
        "batches": batches,
        "batch_size": config.batch_size,
        "steps": batches * config.epochs,
        "done": state.step,
        "device": device,
        "save_every": config.save_every,
        "checkpoint": str(last_path),
        "best": str(best_path),
    }


def _interrupted_event(state: TrainState, steps: int, last_path: Path) -> dict[str, Any]:
    """The ``interrupted`` progress event: where the run stopped and what it saved."""
    return {
        "event": "interrupted",
        "step": state.step,
        "steps": steps,
        "checkpoint": str(last_path),
    }


@dataclass
class _StepReport:
    """One step seen from every rank at once."""

    loss: float
    metrics: dict[str, float]
    applied: bool
    failed: bool


class _Loop:
    """The epochs and steps of one run (state lives in ``TrainState``)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Adam,
        params: list[nn.Parameter],
        scaler: torch.amp.GradScaler,
        context: DistributedContext,
        config: TrainConfig,
        meta: dict[str, Any],
        last_path: Path,
        best_path: Path,
        progress: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.params = params
        self.scaler = scaler
        self.context = context
        self.config = config
        self.meta = meta
        self.last_path = last_path
        self.best_path = best_path
        self.progress = progress if context.is_main else None

    def save(self, path: Path, state: TrainState, metrics: dict[str, float]) -> None:
        _save(
            path,
            self.model,
            self.optimizer,
            state,
            self.meta,
            metrics,
            self.scaler,
            self.context.world_size,
        )

    def shard(self, global_indices: Tensor, step: int) -> BatchShard:
        seed, ctx = self.config.seed, self.context
        shared = derived_generator(seed, 2, step)
        # Per-rank draws: the rank is a key only with several ranks, so that a single
        # process draws exactly what it always did.
        local = derived_generator(seed, 2, step, ctx.rank) if ctx.enabled else shared
        start, stop = shard_bounds(int(global_indices.shape[0]), ctx.rank, ctx.world_size)
        return BatchShard(global_indices, start, stop, shared, local)

    def step(self, shard: BatchShard, step: int, call_step: ShardStepFn) -> _StepReport:
        """Loss, backward, gradient all-reduce and the Adam step, agreed by all ranks."""
        self.optimizer.zero_grad(set_to_none=True)
        loss_value, metrics, ok = 0.0, {}, True
        if shard.size > 0:  # a last batch smaller than the world leaves some ranks idle
            outcome = call_step(shard, step)
            loss_value = float(outcome.loss.detach())
            metrics = dict(outcome.metrics)
            ok = outcome.ok and math.isfinite(loss_value)
            if ok:
                self.scaler.scale(outcome.loss).backward()
        if self.context.enabled:
            # --- data parallel: agree on the step, average metrics, all-reduce gradients ---
            reports = all_gather_objects((ok, shard.weight, loss_value, metrics))
            ok = all(r[0] for r in reports)
            loss_value = sum(r[1] * r[2] for r in reports) if ok else math.nan
            metrics = _weighted_metrics(reports)
            if ok:
                all_reduce_gradients(self.params, shard.weight)
        if not ok:
            return _StepReport(loss_value, metrics, applied=False, failed=True)
        self.scaler.unscale_(self.optimizer)
        finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.params)
        if finite and self.config.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            # The norm before clipping, so that a user can see how often the clip acts.
            metrics["grad_norm"] = float(norm)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips the update itself on inf/NaN gradients
            scale_before = self.scaler.get_scale()
            self.scaler.update()
            # fp16 overflow at a high loss scale is routine: the scaler backs off. Only a
            # gradient that stays non-finite at a scale below 1 counts as a failure.
            return _StepReport(loss_value, metrics, finite, not finite and scale_before < 1.0)
        if finite:
            self.optimizer.step()
        return _StepReport(loss_value, metrics, finite, not finite)

    def evaluate(self, eval_fn: Callable[[], dict[str, float]]) -> dict[str, float]:
        return _rank0_then_share(self.context, eval_fn)

    def run(
        self,
        state: TrainState,
        train_size: int,
        call_step: ShardStepFn,
        eval_fn: Callable[[], dict[str, float]],
        best_key: str,
        stop_after_steps: int | None,
    ) -> TrainState:
        config = self.config
        batches_per_epoch = math.ceil(train_size / config.batch_size)
        total_steps = batches_per_epoch * config.epochs
        bad_streak = 0
        metrics: dict[str, float] = {}
        while state.epoch < config.epochs:
            order = torch.randperm(
                train_size, generator=derived_generator(config.seed, 1, state.epoch)
            )
            self.model.train()
            for b in range(state.batch_in_epoch, batches_per_epoch):
                indices = order[b * config.batch_size : (b + 1) * config.batch_size]
                for group in self.optimizer.param_groups:
                    group["lr"] = _lr_at(config, state.step, total_steps)
                report = self.step(self.shard(indices, state.step), state.step, call_step)
                bad_streak = bad_streak + 1 if report.failed else 0
                if bad_streak >= config.max_bad_steps:
                    raise JiioError(
                        f"{bad_streak} consecutive batches failed (non-finite loss or solve); "
                        "stopping without saving; lower --lr or raise the solver's iterations"
                    )
                state.step += 1
                state.batch_in_epoch = b + 1
                state.history.append({"step": state.step, "loss": report.loss, **report.metrics})
                if self.progress is not None:
                    self.progress(
                        {
                            "event": "step",
                            "epoch": state.epoch,
                            "batch": b + 1,
                            "batches": batches_per_epoch,
                            "step": state.step,
                            "steps": total_steps,
                            "loss": report.loss,
                            **report.metrics,
                        }
                    )
                stop = stop_after_steps is not None and state.step >= stop_after_steps
                saving = (config.save_every and state.step % config.save_every == 0) or stop
                if saving and self.context.is_main:
                    self.save(self.last_path, state, metrics)
                if stop:
                    return state
            self.model.eval()
            metrics = self.evaluate(eval_fn)
            state.epoch += 1
            state.batch_in_epoch = 0
            state.history.append({"step": state.step, "epoch": state.epoch, **metrics})
            improved = metrics.get(best_key, -math.inf) > state.best_metric
            if improved:
                state.best_metric = metrics[best_key]
            if self.context.is_main:
                self.save(self.last_path, state, metrics)
                if improved:
                    self.save(self.best_path, state, metrics)
            if self.progress is not None:
                self.progress({"event": "epoch", "epoch": state.epoch, **metrics})
        return state


def _weighted_metrics(
    reports: list[tuple[bool, float, float, dict[str, float]]],
) -> dict[str, float]:
    """Shard-size-weighted mean of every metric over the ranks that report it."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for _, weight, _, metrics in reports:
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + weight * value
            weights[key] = weights.get(key, 0.0) + weight
    return {k: totals[k] / weights[k] if weights[k] > 0 else math.nan for k in totals}
