"""``jiio train``: train a DEQ model for one of the tasks.

``generate``, ``denoise``, ``inpaint`` train a DEQ decoder whose latent codes are inferred
per batch by JIIO (or by the naive method with ``--inner naive``); ``adversarial`` a DEQ
classifier against JIIO's inner attack (:mod:`.train_adversarial`); ``meta`` a few-shot
meta-model (:mod:`.train_meta`). One signature serves every task; an option typed for a
task that does not read it is an error (:mod:`.train_scope`).
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.commands.train_scope import reject_misplaced_options
from jiio_cli.cli.options import (
    DebugOption,
    DeviceOption,
    JsonOption,
    SeedOption,
    common_options,
    explicit_options,
)
from jiio_cli.cli.output import emit
from jiio_cli.cli.progress import training_progress
from jiio_cli.errors import UsageError
from jiio_cli.models import DecoderConfig
from jiio_cli.tasks.inverse.corruption import Corruption
from jiio_cli.training import TrainConfig, checkpoint_paths

__all__ = ["train"]


class Task(str, Enum):
    generate = "generate"
    denoise = "denoise"
    inpaint = "inpaint"
    adversarial = "adversarial"
    meta = "meta"


class Inner(str, Enum):
    jiio = "jiio"
    naive = "naive"
    pgd = "pgd"


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


class InverseTrainOptions(BaseModel):
    """Validated options of ``jiio train`` for the inverse-problem tasks."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    image_size: int = Field(ge=8, le=512)
    channels: int = Field(ge=1, le=4)
    latent_dim: int = Field(ge=1)
    width: int = Field(ge=8)
    state_resolution: Literal["half", "full"]
    hole_size: int = Field(ge=0)
    mask_ratio: float = Field(ge=0, lt=1)
    inner_iters: int = Field(ge=2)
    jac_weight: float = Field(ge=0)
    max_train: int | None = Field(default=None, ge=1)
    save_every: int = Field(ge=0)
    max_bad_steps: int = Field(ge=1)
    max_grad_norm: float = Field(ge=0)
    precision: Literal["fp32", "bf16", "fp16"]
    init: Path | None = None


def train(
    task: Annotated[Task, typer.Option("--task", help="What to train.")] = Task.denoise,
    data: Annotated[
        Path | None,
        typer.Option(help="Image folder, .npz or MNIST IDX file (default: bundled MNIST-5k)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<task>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from the weights of this checkpoint (same kind of model, same "
            "parameter shapes), e.g. to fine-tune under other options; the optimiser and "
            "schedule start afresh. A resumed run does not read it."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate (cosine decay).")] = 1e-3,
    sigma: Annotated[
        str | None, typer.Option(help="Noise σ on [0, 1], or a range low:high (denoise: 0.2).")
    ] = None,
    hole_size: Annotated[int | None, typer.Option(help="Square hole side (inpaint: 10).")] = None,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of pixels missing at random.")] = 0.0,
    image_size: Annotated[int, typer.Option(help="Model resolution.")] = 28,
    channels: Annotated[int, typer.Option(help="Image channels (1 grey, 3 colour).")] = 1,
    latent_dim: Annotated[int, typer.Option(help="Latent code size.")] = 32,
    width: Annotated[int, typer.Option(help="DEQ cell channels.")] = 32,
    state_resolution: Annotated[
        str,
        typer.Option(
            help="Decoder tasks: the DEQ state at half the image side (upsampled in the "
            "read-out; 4× fewer pixels per channel) or at full resolution."
        ),
    ] = "half",
    augment: Annotated[
        str,
        typer.Option(
            help="Decoder tasks: training-image augmentation, none, shift:N (random whole-pixel "
            "shifts of up to N), elastic:A (a smooth random warp, about A pixels) or "
            "affine:A (a random rotation, scale, shear and shift; A in (0, 2])."
        ),
    ] = "none",
    inner: Annotated[
        Inner,
        typer.Option(help="Inner solve: jiio, or naive (latent tasks) / pgd (adversarial)."),
    ] = Inner.jiio,
    inner_iters: Annotated[
        int | None, typer.Option(help="JIIO iterations per batch (latent 40, adversarial 20).")
    ] = None,
    jac_weight: Annotated[float, typer.Option(help="Jacobian regulariser weight.")] = 0.01,
    max_train: Annotated[int | None, typer.Option(help="Use only the first N images.")] = None,
    save_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: off).")] = 0,
    max_bad_steps: Annotated[
        int,
        typer.Option(
            help="Stop when this many batches in a row fail (NaN/Inf in the solve or the loss); "
            "failed batches are skipped with a warning."
        ),
    ] = 5,
    max_grad_norm: Annotated[
        float | None,
        typer.Option(
            help="Rescale the parameter gradient to at most this norm before each Adam step "
            "(0: off; default off, sinusoid meta-training 1). The history records the norm "
            "before clipping as grad_norm."
        ),
    ] = None,
    # --- adversarial training options ---
    eps: Annotated[
        str, typer.Option(help="adversarial: training budget, e.g. 1.0 or 8/255.")
    ] = "1.0",
    norm: Annotated[str, typer.Option(help="adversarial: threat model, linf or l2.")] = "l2",
    pgd_steps: Annotated[int, typer.Option(help="adversarial: PGD steps with --inner pgd.")] = 10,
    warmup_epochs: Annotated[
        int, typer.Option(help="adversarial: epochs over which eps ramps up from 0.")
    ] = 1,
    num_classes: Annotated[int, typer.Option(help="adversarial: number of classes.")] = 10,
    # --- meta (few-shot) training options: see jiio_cli/cli/commands/train_meta.py ---
    dataset: Annotated[
        str,
        typer.Option(
            help="meta: glyphs (shipped), omniglot (--data) or sinusoid (regression; "
            "untyped options take its defaults: shots 5,10, 10 queries, 25 tasks per step, "
            "episodes per epoch 2500, width 40, context 32, context step 0.3, lr 5e-3, "
            "no Jacobian term; its path through v* is Gauss-Newton, --hyper-step 0 drops it)."
        ),
    ] = "glyphs",
    ways: Annotated[str, typer.Option(help="meta: classes per episode, e.g. 5 or 5,20.")] = "5",
    shots: Annotated[
        str,
        typer.Option(
            help="meta: support images per class (sinusoid: points per task; a list such "
            "as 5,10 alternates between them step by step)."
        ),
    ] = "1",
    queries: Annotated[int, typer.Option(help="meta: query images per class.")] = 3,
    tasks_per_step: Annotated[int, typer.Option(help="meta: episodes per update.")] = 8,
    episodes_per_epoch: Annotated[int, typer.Option(help="meta: episodes per epoch.")] = 400,
    context_dim: Annotated[int, typer.Option(help="meta: size of the FiLM context.")] = 64,
    naive_steps: Annotated[int, typer.Option(help="meta: Adam steps with --inner naive.")] = 10,
    hyper_step: Annotated[
        float, typer.Option(help="meta: step η of the hypergradient through v* (0: first order).")
    ] = 10.0,
    context_step: Annotated[
        float, typer.Option(help="meta: JIIO step α_x on the context (halved at 5/8 of the run).")
    ] = 1.0,
    readout: Annotated[
        str,
        typer.Option(
            help="meta: how queries are classified at the adapted context: head (the "
            "adapted linear read-out) or centroids (distances to the support features' "
            "class means at the adapted context)."
        ),
    ] = "head",
    context_penalty: Annotated[
        float,
        typer.Option(help="meta (glyphs, omniglot): λ of the inner penalty λ·mean(v²)."),
    ] = 1.0,
    head_context: Annotated[
        bool,
        typer.Option(
            help="meta (glyphs, omniglot): the context also offsets the head's read-out "
            "weights; with --no-head-context it only modulates the DEQ cell, so fitting "
            "the support has to change the features."
        ),
    ] = True,
    support_loss: Annotated[
        str,
        typer.Option(
            help="meta (glyphs, omniglot): the support cross-entropy the context is fitted "
            "to: head (the head's logits), centroids (the centroid read-out applied to "
            "the support images themselves) or pseudo-queries (jittered copies of each "
            "support image, see --pseudo-augment and --pseudo-copies, classified by the "
            "clean support's centroids); the last two need --readout centroids."
        ),
    ] = "head",
    pseudo_augment: Annotated[
        str,
        typer.Option(
            help="meta (glyphs, omniglot), --support-loss pseudo-queries: how each copy is "
            "drawn from its support image: elastic:A (a smooth warp of about A pixels), "
            "affine:A (a random affine jitter, A times the glyph drawers' own) or both, "
            "affine:A+elastic:B."
        ),
    ] = "elastic:1",
    pseudo_copies: Annotated[
        int,
        typer.Option(
            help="meta (glyphs, omniglot), --support-loss pseudo-queries: copies per "
            "support image (more: the fitted context depends less on the draws, and each "
            "inner solve has more images)."
        ),
    ] = 2,
    metric_context: Annotated[
        bool,
        typer.Option(
            help="meta (glyphs, omniglot): the context also weighs the channels of the "
            "centroid read-out's distance (needs --readout centroids)."
        ),
    ] = False,
    # --- end of meta options ---
    nproc: Annotated[
        int | None,
        typer.Option(help="Train on N processes on this machine (runs torchrun for you)."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="Arithmetic of the DEQ cell in training: fp32, bf16 or fp16.")
    ] = "fp32",
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
    # Typer fills it in; None when the function is called from Python (nothing typed).
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Train a DEQ model: a decoder (generate / denoise / inpaint), an adversarially robust
    classifier (adversarial) or a few-shot meta-model (meta)."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        # Before launching workers, so that a misplaced option is one line, not one per rank.
        reject_misplaced_options(task.value, explicit_options(ctx))
        if nproc is not None:  # become the launcher: torchrun re-runs this command N times
            from jiio_cli.cli.launch import launch_workers

            raise typer.Exit(launch_workers(nproc, sys.argv[1:]))
        from jiio_cli.distributed import start_distributed

        context, rank_device = start_distributed(common.torch_device)
        if task == Task.adversarial:
            from jiio_cli.cli.commands import train_adversarial

            if inner == Inner.naive:
                raise UsageError("--task adversarial takes --inner jiio or --inner pgd")
            adversarial_opts = train_adversarial.AdversarialTrainOptions(
                eps=eps,
                norm=norm,
                inner=inner.value,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                image_size=image_size,
                channels=channels,
                width=width,
                num_classes=num_classes,
                inner_iters=inner_iters if inner_iters is not None else 20,
                pgd_steps=pgd_steps,
                warmup_epochs=warmup_epochs,
                jac_weight=jac_weight,
                max_train=max_train,
                save_every=save_every,
                max_bad_steps=max_bad_steps,
                max_grad_norm=max_grad_norm or 0.0,
                init=init,
            )
            train_adversarial.run(adversarial_opts, common, data, out, resume, context, rank_device)
            return
        if task == Task.meta:
            from jiio_cli.cli.commands import train_meta

            if inner == Inner.pgd:
                raise UsageError("--task meta takes --inner jiio or --inner naive")
            meta_opts = train_meta.MetaTrainOptions(
                dataset=dataset,
                ways=ways,
                shots=shots,
                queries=queries,
                epochs=epochs,
                batch_size=tasks_per_step,
                episodes_per_epoch=episodes_per_epoch,
                lr=lr,
                image_size=image_size,
                width=width,
                context_dim=context_dim,
                inner=inner.value,
                inner_iters=inner_iters if inner_iters is not None else 30,
                naive_steps=naive_steps,
                hyper_step=hyper_step,
                context_step=context_step,
                readout=readout,
                context_penalty=context_penalty,
                head_context=head_context,
                support_loss=support_loss,
                pseudo_augment=pseudo_augment,
                pseudo_copies=pseudo_copies,
                metric_context=metric_context,
                jac_weight=jac_weight,
                save_every=save_every,
                max_bad_steps=max_bad_steps,
                max_grad_norm=max_grad_norm,
                init=init,
            )
            train_meta.run(meta_opts, common, data, out, resume, explicit_options(ctx))
            return
        if inner == Inner.pgd:
            raise UsageError("--inner pgd is for --task adversarial; use jiio or naive")
        opts = InverseTrainOptions(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size,
            channels=channels,
            latent_dim=latent_dim,
            width=width,
            state_resolution=state_resolution,
            hole_size=hole_size if hole_size is not None else 0,
            mask_ratio=mask_ratio,
            inner_iters=inner_iters if inner_iters is not None else 40,
            jac_weight=jac_weight,
            max_train=max_train,
            save_every=save_every,
            max_bad_steps=max_bad_steps,
            max_grad_norm=max_grad_norm or 0.0,
            precision=precision,
            init=init,
        )
        if opts.width % 8:
            raise UsageError(
                f"invalid --width {opts.width}: must be a multiple of 8 (GroupNorm uses 8 groups)"
            )
        # Imported here so that `jiio --help` stays fast.
        from jiio_cli.data.augment import parse_augmentation
        from jiio_cli.tasks.inverse.training import (
            InverseTrainSpec,
            default_corruption,
            train_inverse,
        )

        try:
            augmentation = parse_augmentation(augment)
        except ValueError as error:
            raise UsageError(f"invalid --augment {augment!r}: {error}") from None

        base = default_corruption(task.value)  # type: ignore[arg-type]
        corruption = Corruption(
            sigma=parse_sigma(sigma) if sigma is not None else base.sigma,
            hole_size=hole_size if hole_size is not None else base.hole_size,
            mask_ratio=mask_ratio or base.mask_ratio,
        )
        if task == Task.denoise and corruption.sigma_range == (0.0, 0.0):
            raise UsageError("--task denoise needs a noise level: --sigma 0.2 (or a range 0.1:0.3)")
        if task == Task.inpaint and corruption.hole_size == 0 and corruption.mask_ratio == 0:
            raise UsageError("--task inpaint needs --hole-size N or --mask-ratio R")
        if data is not None and not data.exists():
            raise UsageError(f"--data {data} does not exist")
        spec = InverseTrainSpec(
            task=task.value,  # type: ignore[arg-type]
            corruption=corruption,
            augmentation=augmentation,
            model=DecoderConfig(
                latent_dim=opts.latent_dim,
                channels=opts.width,
                image_channels=opts.channels,
                image_size=opts.image_size,
                half_resolution=opts.state_resolution == "half",
            ),
            loop=TrainConfig(
                epochs=opts.epochs,
                batch_size=opts.batch_size,
                lr=opts.lr,
                seed=common.seed,
                save_every=opts.save_every,
                max_bad_steps=opts.max_bad_steps,
                max_grad_norm=opts.max_grad_norm,
                precision=opts.precision,
                init=str(opts.init) if opts.init is not None else None,
            ),
            inner=inner.value,  # type: ignore[arg-type]
            inner_iterations=opts.inner_iters,
            jacobian_weight=opts.jac_weight,
            data=str(data) if data is not None else None,
            max_train=opts.max_train,
        )
        run_dir = out if out is not None else Path("runs") / task.value
        started = time.perf_counter()
        show = context.is_main and not common.json_output
        with training_progress(opts.epochs, enabled=show) as progress:
            state = train_inverse(spec, rank_device, run_dir, resume, progress)
        if not context.is_main:
            return
        last, best = checkpoint_paths(run_dir, task.value)
        evals = [h for h in state.history if "heldout_psnr" in h]
        result = {
            "task": task.value,
            "epochs": state.epoch,
            "steps": state.step,
            "final_loss": next((h["loss"] for h in reversed(state.history) if "loss" in h), None),
            "heldout_psnr": evals[-1]["heldout_psnr"] if evals else None,
            "best_heldout_psnr": state.best_metric if evals else None,
            "seconds": time.perf_counter() - started,
            "checkpoint_last": str(last),
            "checkpoint_best": str(best),
            "device": str(common.torch_device),
            "processes": context.world_size,
            "precision": opts.precision,
            "seed": common.seed,
        }
        emit(result, json_output=common.json_output, title="jiio train")
