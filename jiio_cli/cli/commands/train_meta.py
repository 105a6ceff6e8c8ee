"""The ``meta`` branch of ``jiio train``: meta-train a few-shot FiLM DEQ model.

Kept apart from :mod:`jiio_cli.cli.commands.train` so that the task's option checks and
wiring read in one place; ``train`` parses the shared options and calls :func:`run`.

``--dataset glyphs|omniglot`` trains a FiLM DEQ classifier; ``--dataset sinusoid`` a
FiLM DEQ regressor on sinusoid tasks (:mod:`jiio_cli.tasks.fewshot.sinusoid_training`). The
sinusoid run has its own defaults (:data:`SINUSOID_DEFAULTS`) for the options the user
did not type, and rejects the typed options that mean nothing for it (``--ways``,
``--image-size``, ``--data``, ...), rather than ignoring them.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from jiio_cli.cli.commands.train_common import (
    LoopCommandConfig,
    loop_config,
    run_summary,
    timed_training,
)
from jiio_cli.cli.commands.train_options import COMMON_OPTIONS, option_flag
from jiio_cli.cli.output import emit
from jiio_cli.config import CommonConfig
from jiio_cli.errors import UsageError

__all__ = [
    "SINUSOID_DEFAULTS",
    "SINUSOID_OPTIONS",
    "MetaTrainCommandConfig",
    "parse_shots",
    "parse_ways",
    "run",
]

SINUSOID_DEFAULTS: dict[str, int | float | str] = {
    "shots": "5,10",
    "queries": 10,
    "tasks_per_step": 25,
    "episodes_per_epoch": 2500,
    "width": 40,
    "context_dim": 32,
    "context_step": 0.3,
    "jac_weight": 0.0,
    "lr": 5e-3,
}
"""Defaults of ``--dataset sinusoid`` for the options left untyped (``train`` parameter
names): MAML's 5- and 10-shot settings (alternated step by step, so one model serves
both), 25 tasks per update and a 40-unit hidden state."""

SINUSOID_MAX_GRAD_NORM = 1.0
"""Meta-gradient norm clip of sinusoid runs. A rare batch whose inner solve lands badly
gives a gradient spike; one big step that enlarges the context maps makes the fixed
α_x step of the next inner solves unstable, and training never recovers (seen at
lr 1e-2 without a clip). Healthy steps have norms well below 1, so the clip is idle."""

SINUSOID_OPTIONS = COMMON_OPTIONS | frozenset(
    {*SINUSOID_DEFAULTS, "dataset", "naive_steps", "hyper_step"}
)
"""``train`` parameters that apply to ``--dataset sinusoid``; typing any other is an error."""

_SINUSOID_HINTS = {
    "ways": "regression tasks have no classes",
    "image_size": "the inputs are scalars t",
    "data": "the tasks are drawn from a generator, not read",
    "batch_size": "tasks per update is --tasks-per-step",
}


def _int_list(
    text: str, option: str, example: str, low: int, high: int | None = None
) -> tuple[int, ...]:
    """Parse ``N`` or ``N,M,...`` for ``option``, each value in [low, high] (no upper bound
    when ``high`` is None); one line naming the option otherwise."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        first = example.split(",")[0]
        raise UsageError(
            f"invalid {option} {text!r}: give a number like {first} or a list like {example}"
        ) from None
    if not values or any(v < low or (high is not None and v > high) for v in values):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise UsageError(f"invalid {option} {text!r}: every value must be {bound}")
    return values


def parse_ways(text: str) -> tuple[int, ...]:
    """``5`` or a list ``5,20`` (training episodes cycle through the values)."""
    return _int_list(text, "--ways", "5,20", 2)


def parse_pseudo_augment(text: str) -> tuple[float, float]:
    """``elastic:A``, ``affine:A`` or ``affine:A+elastic:B`` → (elastic warp, affine
    strength) of the pseudo-queries, 0 for a part not named; one line otherwise."""
    from jiio_cli.data.augment import parse_augmentation

    amounts = {"elastic": 0.0, "affine": 0.0}
    parts = text.split("+")
    for part in parts:
        kind = part.strip().partition(":")[0]
        if kind not in amounts or amounts[kind] or len(parts) > 2:
            raise UsageError(
                f"invalid --pseudo-augment {text!r}: expected elastic:A, affine:A or "
                "affine:A+elastic:B"
            )
        try:
            amounts[kind] = parse_augmentation(part).amount
        except ValueError as err:
            raise UsageError(f"invalid --pseudo-augment {text!r}: {err}") from None
    return amounts["elastic"], amounts["affine"]


def parse_episode_kinds(text: str) -> tuple[str, ...]:
    """``across``, ``within`` or a list such as ``across,within`` (cycled step by step)."""
    from jiio_cli.data.episodes import EPISODE_KINDS

    kinds = tuple(part.strip() for part in text.split(","))
    if not kinds or any(k not in EPISODE_KINDS for k in kinds):
        raise UsageError(
            f"invalid --episode-kinds {text!r}: give across, within or a list like across,within"
        )
    return kinds


def parse_shots(text: str) -> tuple[int, ...]:
    """``5`` or a list ``5,10`` of support sizes (sinusoid training cycles through them)."""
    return _int_list(text, "--shots", "5,10", 1, 50)


class MetaTrainCommandConfig(LoopCommandConfig):
    """Validated options of ``jiio train --task meta``."""

    dataset: str = Field(pattern="^(glyphs|omniglot|sinusoid)$")
    ways: str
    shots: str
    queries: int = Field(ge=1, le=100)
    episodes_per_epoch: int = Field(ge=1)
    image_size: int = Field(ge=8, le=128)
    width: int = Field(ge=8)
    context_dim: int = Field(ge=1)
    inner: str = Field(pattern="^(jiio|naive)$")
    inner_iters: int = Field(ge=2)
    naive_steps: int = Field(ge=1)
    hyper_step: float = Field(ge=0)
    context_step: float = Field(gt=0)
    readout: Literal["head", "centroids"] = "head"
    context_penalty: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    head_context: bool = True
    support_loss: Literal["head", "centroids", "pseudo-queries"] = "head"
    pseudo_augment: str = "elastic:1"
    pseudo_copies: int = Field(default=2, ge=1, le=16)
    metric_context: bool = False
    transductive_weight: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    offset_weight: float = Field(default=0.01, gt=0, allow_inf_nan=False)
    model: Literal["deq", "protonet"] = "deq"
    encoder: Literal["injection", "conv4"] = "injection"
    preprocess: Literal["resize", "crop"] = "resize"
    rotations: bool = True
    episode_kinds: str = "across"
    augment: str = "none"
    max_grad_norm: float | None = Field(default=None, ge=0)


def run(
    opts: MetaTrainCommandConfig,
    common: CommonConfig,
    data: list[Path],
    out: Path | None,
    resume: bool,
    explicit: AbstractSet[str] = frozenset(),
) -> None:
    """Train (or resume) and print the result (table, or JSON with ``--json``).

    Args:
        opts: the validated options (``train``'s defaults where untyped).
        common: device, seed, output mode.
        data: the ``--data`` paths (empty when not given).
        out: run folder (default ``runs/meta`` or ``runs/meta-sinusoid``).
        resume: continue the run in ``out``.
        explicit: ``train`` parameter names the user typed (see
            :func:`~jiio_cli.cli.options.explicit_options`).
    """
    if opts.dataset == "sinusoid":
        if data:
            raise UsageError(
                "--data does not apply to --task meta --dataset sinusoid (the tasks are "
                "drawn from a generator, not read); remove it"
            )
        _run_sinusoid(opts, common, out, resume, explicit)
        return
    spec = _classification_config(opts, common, data, explicit)
    from jiio_cli.tasks.fewshot.training import train_meta

    run_dir = out if out is not None else Path("runs") / "meta"
    show = not common.json_output
    state, seconds = timed_training(train_meta, spec, common.torch_device, run_dir, resume, show)
    evals = [h for h in state.history if "val_accuracy" in h]
    result: dict[str, Any] = {
        "task": "meta",
        "inner": opts.inner,
        "model": opts.model,
        "data": [str(p) for p in data] if data else "glyphs (sample_data/glyphs.npz)",
        "ways": list(spec.ways),
        "shots": spec.shots,
        **({k: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else {}),
        "best_val_accuracy": state.best_metric if evals else None,
        **run_summary(state, run_dir, "meta", seconds, common),
    }
    emit(result, json_output=common.json_output, title="jiio train --task meta")


def _check_classification_options(
    opts: MetaTrainCommandConfig, data: list[Path], explicit: AbstractSet[str]
) -> None:
    """The option combinations a few-shot classifier refuses, each in one line."""
    if opts.width % 8:
        raise UsageError(
            f"invalid --width {opts.width}: must be a multiple of 8 (GroupNorm uses 8 groups)"
        )
    for path in data:
        if not path.exists():
            raise UsageError(f"--data {path} does not exist")
    if data and opts.dataset != "omniglot":
        raise UsageError("--data is read by --dataset omniglot; add --dataset omniglot")
    if opts.augment != "none":
        from jiio_cli.data.augment import parse_augmentation

        try:
            parse_augmentation(opts.augment)
        except ValueError as err:
            raise UsageError(f"invalid --augment {opts.augment!r}: {err}") from None
    conv4_misfits = [
        flag
        for flag, bad in (
            ("--readout head", opts.readout != "centroids"),
            ("--support-loss head", opts.support_loss == "head"),
            ("--head-context", opts.head_context and "head_context" in explicit),
        )
        if bad
    ]
    if opts.model == "deq" and opts.encoder == "conv4" and conv4_misfits:
        raise UsageError(
            f"--encoder conv4 classifies by class centroids: {conv4_misfits[0]} does not "
            "apply; use --readout centroids --support-loss pseudo-queries"
        )
    if opts.support_loss != "head" and opts.readout != "centroids":
        raise UsageError(f"--support-loss {opts.support_loss} needs --readout centroids")
    for name in ("pseudo_augment", "pseudo_copies"):
        if name in explicit and opts.support_loss != "pseudo-queries":
            raise UsageError(f"{option_flag(name)} needs --support-loss pseudo-queries")
    for name in ("transductive_weight", "offset_weight"):
        if name in explicit and (opts.model != "deq" or opts.readout != "centroids"):
            raise UsageError(f"{option_flag(name)} needs --model deq --readout centroids")


def _classification_config(
    opts: MetaTrainCommandConfig,
    common: CommonConfig,
    data: list[Path],
    explicit: AbstractSet[str],
) -> Any:
    """Options → the few-shot classifier's training configuration, checked first."""
    from jiio_cli.models import MetaConfig
    from jiio_cli.tasks.fewshot.training import MetaTrainConfig

    ways = parse_ways(opts.ways)
    shots = parse_shots(opts.shots)
    if len(shots) > 1:
        raise UsageError(f"invalid --shots {opts.shots!r}: glyph episodes take one number of shots")
    kinds = parse_episode_kinds(opts.episode_kinds)
    _check_classification_options(opts, data, explicit)
    pseudo_warp, pseudo_affine = parse_pseudo_augment(opts.pseudo_augment)
    if opts.metric_context and opts.readout != "centroids":
        raise UsageError("--metric-context needs --readout centroids")
    if opts.dataset == "omniglot" and not data:
        raise UsageError(
            "--dataset omniglot needs --data: Omniglot's archives or alphabet/character folders"
        )
    return MetaTrainConfig(
        model=MetaConfig(
            context_dim=opts.context_dim,
            ways=max(ways),
            channels=opts.width,
            image_size=opts.image_size,
            head_context=opts.head_context and opts.encoder != "conv4",
            support_loss=opts.support_loss,
            encoder=opts.encoder,
            preprocess=opts.preprocess,
            pseudo_warp=pseudo_warp,
            pseudo_affine=pseudo_affine,
            pseudo_copies=opts.pseudo_copies,
            metric_context=opts.metric_context,
            readout=opts.readout,
            transductive_weight=opts.transductive_weight,
            offset_weight=opts.offset_weight,
        ),
        loop=loop_config(opts, common.seed, opts.max_grad_norm or 0.0),
        ways=ways,
        shots=shots[0],
        hyper_step=opts.hyper_step,
        context_weight=opts.context_penalty,
        data=tuple(str(p) for p in data) if data else None,
        model_type=opts.model,
        augment=opts.augment,
        rotations=opts.rotations,
        episode_kinds=kinds,
        **_shared_spec_fields(opts),
    )


def _shared_spec_fields(opts: MetaTrainCommandConfig) -> dict[str, Any]:
    """The spec fields that both datasets' runs take from the options alike: queries and
    tasks per epoch, the inner solve (its context step halved by the end) and the
    Jacobian regulariser's weight."""
    return {
        "queries": opts.queries,
        "episodes_per_epoch": opts.episodes_per_epoch,
        "inner": opts.inner,
        "inner_iters": opts.inner_iters,
        "naive_steps": opts.naive_steps,
        "alpha_x": opts.context_step,
        "alpha_x_final": opts.context_step / 2,
        "jacobian_weight": opts.jac_weight,
    }


def _sinusoid_options(
    opts: MetaTrainCommandConfig, explicit: AbstractSet[str]
) -> MetaTrainCommandConfig:
    """``opts`` with the sinusoid defaults for untyped options; typed misfits rejected."""
    misfits = sorted(set(explicit) - SINUSOID_OPTIONS)
    if "hyper_step" in explicit and opts.hyper_step != 0:
        raise UsageError(
            f"--hyper-step {opts.hyper_step:g} does not apply to --dataset sinusoid: its path "
            "through v* is the Gauss-Newton one, with no step; --hyper-step 0 turns it off"
        )
    if misfits:
        name = misfits[0]
        hint = _SINUSOID_HINTS.get(name, "it belongs to another task")
        raise UsageError(
            f"{option_flag(name)} does not apply to --task meta --dataset sinusoid "
            f"({hint}); remove it"
        )
    field_of = {"tasks_per_step": "batch_size"}
    updates = {
        field_of.get(name, name): value
        for name, value in SINUSOID_DEFAULTS.items()
        if name not in explicit
    }
    return MetaTrainCommandConfig.model_validate({**opts.model_dump(), **updates})


def _run_sinusoid(
    opts: MetaTrainCommandConfig,
    common: CommonConfig,
    out: Path | None,
    resume: bool,
    explicit: AbstractSet[str],
) -> None:
    """``jiio train --task meta --dataset sinusoid``: see the module docstring."""
    opts = _sinusoid_options(opts, explicit)
    shots = parse_shots(opts.shots)
    from jiio_cli.models import RegressorConfig
    from jiio_cli.tasks.fewshot.sinusoid_training import SinusoidTrainConfig, train_sinusoid

    spec = SinusoidTrainConfig(
        model=RegressorConfig(hidden=opts.width, context_dim=opts.context_dim),
        loop=loop_config(
            opts,
            common.seed,
            SINUSOID_MAX_GRAD_NORM if opts.max_grad_norm is None else opts.max_grad_norm,
        ),
        shots=shots,
        hypergradient="hyper_step" not in explicit,  # typed, it can only be 0 (see above)
        **_shared_spec_fields(opts),
    )
    run_dir = out if out is not None else Path("runs") / "meta-sinusoid"
    show = not common.json_output
    state, seconds = timed_training(
        train_sinusoid, spec, common.torch_device, run_dir, resume, show
    )
    evals = [h for h in state.history if "val_mse" in h]
    result: dict[str, Any] = {
        "task": "meta",
        "dataset": "sinusoid",
        "inner": opts.inner,
        "hypergradient": spec.hypergradient,
        "shots": list(shots),
        "queries": opts.queries,
        **({k: v for k, v in evals[-1].items() if k.startswith("val_mse")} if evals else {}),
        "best_val_mse": -state.best_metric if evals else None,
        **run_summary(state, run_dir, "meta", seconds, common),
    }
    emit(result, json_output=common.json_output, title="jiio train --task meta --dataset sinusoid")
