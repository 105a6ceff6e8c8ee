"""``jiio train``: train a DEQ model for one of the tasks.

``generate``, ``denoise``, ``inpaint`` train a DEQ decoder whose latent codes are inferred
per batch by JIIO (or by the naive method with ``--inner naive``); ``adversarial`` a DEQ
classifier against JIIO's inner attack (:mod:`.train_adversarial`); ``meta`` a few-shot
meta-model (:mod:`.train_meta`). One signature serves every task; its options are declared
in :mod:`.train_options`, whose help panels also say which tasks read them, and an option
typed for another task is an error. ``--config recipe.toml`` reads option values from a
recipe (``recipes/``); options typed on the command line override it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel, Field

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.commands import train_options as o
from jiio_cli.cli.commands.train_common import (
    ImageTrainCommandConfig,
    loop_config,
    run_summary,
    timed_training,
)
from jiio_cli.cli.commands.train_defaults import apply_task_defaults
from jiio_cli.cli.commands.train_options import option_flag
from jiio_cli.cli.options import (
    ConfigOption,
    DebugOption,
    DeviceOption,
    JsonOption,
    SeedOption,
    common_options,
    explicit_options,
    reject_other_task_options,
)
from jiio_cli.cli.output import emit
from jiio_cli.config import CommonConfig
from jiio_cli.distributed import DistributedContext
from jiio_cli.errors import UsageError
from jiio_cli.tasks.inverse.corruption import Corruption

__all__ = ["parse_sigma", "train"]


def parse_sigma(text: str) -> float | tuple[float, float]:
    """``0.2`` or a blind-denoising range ``0.1:0.3`` (σ on the [0, 1] scale)."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UsageError(
            f"invalid --sigma {text!r}: give a number like 0.2 or a range like 0.1:0.3"
        ) from None
    if (
        len(values) > 2
        or any(not 0 <= v < 10 for v in values)
        or (len(values) == 2 and values[0] > values[1])
    ):
        raise UsageError(f"invalid --sigma {text!r}: need 0 <= sigma (and low <= high for a range)")
    return values[0] if len(values) == 1 else (values[0], values[1])


def train(
    # Typer fills it in; None when the function is called from Python (nothing typed).
    ctx: typer.Context = None,  # type: ignore[assignment]
    task: o.TaskOption = o.Task.denoise,
    config: ConfigOption = None,
    data: o.DataOption = None,
    out: o.RunFolderOption = None,
    resume: o.ResumeOption = False,
    init: o.InitOption = None,
    epochs: o.EpochsOption = 10,
    lr: o.LrOption = 1e-3,
    inner: o.InnerOption = o.Inner.jiio,
    iterations: o.TrainIterationsOption = None,
    inner_iters: o.InnerItersOption = None,
    image_size: o.ImageSizeOption = 28,
    width: o.WidthOption = 32,
    jac_weight: o.JacWeightOption = 0.01,
    save_every: o.SaveEveryOption = 0,
    max_bad_steps: o.MaxBadStepsOption = 5,
    max_grad_norm: o.MaxGradNormOption = None,
    nproc: o.NprocOption = None,
    batch_size: o.TrainBatchSizeOption = 64,
    channels: o.ChannelsOption = 1,
    max_train: o.MaxTrainOption = None,
    sigma: o.SigmaOption = None,
    hole_size: o.HoleSizeOption = None,
    mask_ratio: o.MaskRatioOption = 0.0,
    latent_dim: o.LatentDimOption = 32,
    state_resolution: o.StateResolutionOption = "half",
    precision: o.PrecisionOption = "fp32",
    augment: o.AugmentOption = "none",
    eps: o.TrainEpsOption = "1.0",
    norm: o.TrainNormOption = "l2",
    pgd_steps: o.PgdStepsOption = 10,
    warmup_epochs: o.WarmupEpochsOption = 1,
    num_classes: o.NumClassesOption = 10,
    dataset: o.DatasetOption = "glyphs",
    ways: o.WaysOption = "5",
    shots: o.ShotsOption = "1",
    queries: o.QueriesOption = 3,
    tasks_per_step: o.TasksPerStepOption = 8,
    episodes_per_epoch: o.EpisodesPerEpochOption = 400,
    context_dim: o.ContextDimOption = 64,
    naive_steps: o.TrainNaiveStepsOption = 10,
    hyper_step: o.HyperStepOption = 10.0,
    alpha_x: o.TrainAlphaXOption = 1.0,
    context_step: o.ContextStepOption = None,
    readout: o.ReadoutOption = "head",
    model: o.ModelOption = "deq",
    context_penalty: o.ContextPenaltyOption = 1.0,
    head_context: o.HeadContextOption = True,
    support_loss: o.SupportLossOption = "head",
    pseudo_augment: o.PseudoAugmentOption = "elastic:1",
    pseudo_copies: o.PseudoCopiesOption = 2,
    metric_context: o.MetricContextOption = False,
    transductive_weight: o.TransductiveWeightOption = 0.0,
    offset_weight: o.OffsetWeightOption = 0.01,
    encoder: o.EncoderOption = "injection",
    preprocess: o.PreprocessOption = "resize",
    rotations: o.RotationsOption = True,
    episode_kinds: o.EpisodeKindsOption = "across",
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Train a DEQ: a decoder (generate, denoise, inpaint), a robust classifier or a meta-model.

    Options left out take per-task defaults, a run of about 15 min on a CPU ("else": other
    tasks, meta with --dataset, and recipes: recipes/*.toml, --config; recipes/README.md)."""
    values = {name: value for name, value in locals().items() if name != "ctx"}
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        # Before launching workers, so that a misplaced option is one line, not one per rank.
        reject_other_task_options(ctx, task.value, o.PANEL_TASKS)
        if nproc is not None:  # become the launcher: torchrun re-runs this command N times
            raise typer.Exit(_launch_workers(nproc))
        values, given = _resolve_old_names(values, explicit_options(ctx))
        values = apply_task_defaults(values, given, task.value, recipe=config is not None)
        _RUNNERS[task](values, common, given)


def _launch_workers(nproc: int) -> int:
    from jiio_cli.cli.launch import launch_workers

    return launch_workers(nproc, sys.argv[1:])


_OLD_NAMES = {"inner_iters": "iterations", "context_step": "alpha_x"}


def _resolve_old_names(values: dict[str, Any], given: Set[str]) -> tuple[dict[str, Any], set[str]]:
    """``values`` and ``given`` with an option typed by its old name moved to its new one."""
    given = set(given)
    for old, new in _OLD_NAMES.items():
        if old in given and new in given:
            raise UsageError(f"{option_flag(old)} is the old name of {option_flag(new)}: give one")
        if old in given:
            values[new] = values[old]
            given = (given - {old}) | {new}
    return values, given


def _pick(values: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The option values that ``model`` has fields for."""
    return {name: values[name] for name in model.model_fields if name in values}


def _first_data(values: Mapping[str, Any]) -> Path | None:
    """The one ``--data`` path of an image task, checked to exist (None: the default)."""
    paths = values["data"] or []
    if len(paths) > 1:
        raise UsageError(f"--task {values['task'].value} reads one --data path; give one")
    if paths and not paths[0].exists():
        raise UsageError(f"--data {paths[0]} does not exist")
    return paths[0] if paths else None


def _train_meta(values: Mapping[str, Any], common: CommonConfig, given: Set[str]) -> None:
    """``--task meta``: the options under :mod:`.train_meta`'s names, then its run."""
    from jiio_cli.cli.commands import train_meta

    if values["inner"] == o.Inner.pgd:
        raise UsageError("--task meta takes --inner jiio or --inner naive")
    renamed = {
        **values,
        "inner": values["inner"].value,
        "batch_size": values["tasks_per_step"],
        "inner_iters": values["iterations"] if values["iterations"] is not None else 30,
        "context_step": values["alpha_x"],
    }
    opts = train_meta.MetaTrainCommandConfig(**_pick(renamed, train_meta.MetaTrainCommandConfig))
    # train_meta names the context's step by its old option name.
    given = {"context_step" if name == "alpha_x" else name for name in given}
    train_meta.run(opts, common, list(values["data"] or []), values["out"], values["resume"], given)


def _train_adversarial(values: Mapping[str, Any], common: CommonConfig, _: Set[str]) -> None:
    """``--task adversarial``: validated options, then :func:`.train_adversarial.run`."""
    from jiio_cli.cli.commands import train_adversarial
    from jiio_cli.distributed import start_distributed

    if values["inner"] == o.Inner.naive:
        raise UsageError("--task adversarial takes --inner jiio or --inner pgd")
    config = train_adversarial.AdversarialTrainCommandConfig(
        **_pick(values, train_adversarial.AdversarialTrainCommandConfig)
        | {
            "inner": values["inner"].value,
            "norm": values["norm"].value,
            "iterations": values["iterations"] if values["iterations"] is not None else 20,
            "max_grad_norm": values["max_grad_norm"] or 0.0,
        }
    )
    context, rank_device = start_distributed(common.torch_device)
    data = _first_data(values)
    train_adversarial.run(
        config, common, data, values["out"], values["resume"], context, rank_device
    )


class DecoderTrainCommandConfig(ImageTrainCommandConfig):
    """Validated options of ``jiio train`` for the decoder tasks (generate, denoise,
    inpaint); names as the command line's."""

    latent_dim: int = Field(ge=1)
    state_resolution: Literal["half", "full"]
    hole_size: int = Field(ge=0)
    mask_ratio: float = Field(ge=0, lt=1)
    precision: Literal["fp32", "bf16", "fp16"]


def _decoder_corruption(values: Mapping[str, Any]) -> Corruption:
    """The task's observation model with the typed ``--sigma``/``--hole-size``/
    ``--mask-ratio`` in place of its defaults; refuses one that observes nothing."""
    from jiio_cli.tasks.inverse.training import default_corruption

    task, sigma, hole_size = values["task"].value, values["sigma"], values["hole_size"]
    base = default_corruption(task)
    corruption = Corruption(
        sigma=parse_sigma(sigma) if sigma is not None else base.sigma,
        hole_size=hole_size if hole_size is not None else base.hole_size,
        mask_ratio=values["mask_ratio"] or base.mask_ratio,
    )
    if task == "denoise" and corruption.sigma_range == (0.0, 0.0):
        raise UsageError("--task denoise needs a noise level: --sigma 0.2 (or a range 0.1:0.3)")
    if task == "inpaint" and corruption.hole_size == 0 and corruption.mask_ratio == 0:
        raise UsageError("--task inpaint needs --hole-size N or --mask-ratio R")
    return corruption


def _decoder_training_config(values: Mapping[str, Any], common: CommonConfig) -> Any:
    """Options → the task's training configuration, in one step (validated first)."""
    from jiio_cli.data.augment import parse_augmentation
    from jiio_cli.models import DecoderConfig
    from jiio_cli.tasks.inverse.training import InverseTrainConfig

    task, inner = values["task"].value, values["inner"]
    if inner == o.Inner.pgd:
        raise UsageError("--inner pgd is for --task adversarial; use jiio or naive")
    config = DecoderTrainCommandConfig(
        **_pick(values, DecoderTrainCommandConfig)
        | {
            "hole_size": values["hole_size"] or 0,
            "iterations": values["iterations"] if values["iterations"] is not None else 40,
            "max_grad_norm": values["max_grad_norm"] or 0.0,
        }
    )
    if config.width % 8:
        raise UsageError(
            f"invalid --width {config.width}: must be a multiple of 8 (GroupNorm uses 8 groups)"
        )
    try:
        augmentation = parse_augmentation(values["augment"])
    except ValueError as error:
        raise UsageError(f"invalid --augment {values['augment']!r}: {error}") from None
    corruption = _decoder_corruption(values)
    data = _first_data(values)
    return InverseTrainConfig(
        task=task,
        corruption=corruption,
        augmentation=augmentation,
        model=DecoderConfig(
            latent_dim=config.latent_dim,
            channels=config.width,
            image_channels=config.channels,
            image_size=config.image_size,
            half_resolution=config.state_resolution == "half",
        ),
        loop=loop_config(config, common.seed, config.max_grad_norm, config.precision),
        inner=inner.value,
        inner_iterations=config.iterations,
        jacobian_weight=config.jac_weight,
        data=str(data) if data is not None else None,
        max_train=config.max_train,
    )


def _train_decoder(values: Mapping[str, Any], common: CommonConfig, _: Set[str]) -> None:
    """``--task generate|denoise|inpaint``: train, then print the result."""
    from jiio_cli.distributed import start_distributed
    from jiio_cli.tasks.inverse.training import train_inverse

    spec = _decoder_training_config(values, common)
    context, rank_device = start_distributed(common.torch_device)
    run_dir = values["out"] if values["out"] is not None else Path("runs") / spec.task
    show = context.is_main and not common.json_output
    state, seconds = timed_training(
        train_inverse, spec, rank_device, run_dir, values["resume"], show
    )
    if context.is_main:
        _report_decoder(spec, state, run_dir, seconds, common, context)


def _report_decoder(
    spec: Any,
    state: Any,
    run_dir: Path,
    seconds: float,
    common: CommonConfig,
    context: DistributedContext,
) -> None:
    evals = [h for h in state.history if "heldout_psnr" in h]
    result = {
        "task": spec.task,
        "heldout_psnr": evals[-1]["heldout_psnr"] if evals else None,
        "best_heldout_psnr": state.best_metric if evals else None,
        **run_summary(state, run_dir, spec.task, seconds, common),
        "processes": context.world_size,
        "precision": spec.loop.precision,
    }
    emit(result, json_output=common.json_output, title="jiio train")


_RUNNERS = {
    o.Task.generate: _train_decoder,
    o.Task.denoise: _train_decoder,
    o.Task.inpaint: _train_decoder,
    o.Task.adversarial: _train_adversarial,
    o.Task.meta: _train_meta,
}
