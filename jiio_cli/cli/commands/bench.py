"""``jiio bench``: JIIO against the naive method, side by side, in one process.

One module per task does the work: ``bench_reconstruct`` (time to equal objective on a
held-out batch, and with ``--quality`` a PSNR table against classical baselines),
``bench_attack`` (JIIO attack against PGD at growing budgets), ``bench_adapt`` (few-shot
adaptation against the naive inner loop), ``bench_train`` (training with either inner
solve) and ``bench_engine`` (the solver's own cost per iteration).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.commands.bench_scope import reject_misplaced_bench_options
from jiio_cli.cli.options import (
    DebugOption,
    DeviceOption,
    JsonOption,
    SeedOption,
    common_options,
    explicit_options,
)
from jiio_cli.errors import NotBuiltError

__all__ = ["bench"]


class BenchTask(str, Enum):
    reconstruct = "reconstruct"
    engine = "engine"
    attack = "attack"
    adapt = "adapt"
    train = "train"


class Corruptions(str, Enum):
    inpaint = "inpaint"
    denoise = "denoise"


class BenchOptions(BaseModel):
    """Validated numeric options of ``jiio bench``."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(ge=1, le=4096)
    naive_steps: int = Field(ge=1)
    count: int = Field(ge=1, le=500)
    iterations: int = Field(ge=2)
    memory: int | None = Field(default=None, ge=1, le=100)
    alpha_x: float | None = Field(default=None, gt=0)
    alpha_x_start: float | None = Field(default=None, gt=0)
    start_iterations: int | None = Field(default=None, ge=0)
    x_weight: float | None = Field(default=None, gt=0, le=1e4)
    film_scale: float | None = Field(default=None, gt=0, le=100)
    solve_iters: int | None = Field(default=None, ge=1, le=10000)
    repeat: int = Field(ge=1, le=100)
    channels: int = Field(ge=1, le=1024)
    candidates: int = Field(ge=1, le=100)
    size: int = Field(ge=4, le=512)


def bench(
    task: Annotated[BenchTask, typer.Option("--task", help="What to measure.")] = (
        BenchTask.reconstruct
    ),
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", "-c", help="Decoder (default: shipped).")
    ] = None,
    corruption: Annotated[Corruptions, typer.Option(help="Observation model.")] = (
        Corruptions.inpaint
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per solve.")] = 64,
    naive_steps: Annotated[int, typer.Option(help="Adam steps of the naive method.")] = 50,
    memory: Annotated[
        int | None,
        typer.Option(help="reconstruct, adapt: Anderson memory of JIIO (default 10 for both)."),
    ] = None,
    alpha_x: Annotated[
        float | None,
        typer.Option(help="reconstruct, adapt: JIIO's step size α_x (default 0.02, 2.0)."),
    ] = None,
    alpha_x_start: Annotated[
        float | None,
        typer.Option(
            help="reconstruct: α_x of the first --start-iterations iterations, then --alpha-x "
            "(default 0.06; equal to --alpha-x for a constant step)."
        ),
    ] = None,
    start_iterations: Annotated[
        int | None,
        typer.Option(help="reconstruct: iterations at --alpha-x-start (default 30; 0: none)."),
    ] = None,
    x_weight: Annotated[
        float | None,
        typer.Option(
            help="reconstruct, adapt: weight of the x block in JIIO's Anderson least squares "
            "(1 = the paper's unweighted state; default 10, 30)."
        ),
    ] = None,
    film_scale: Annotated[
        float | None,
        typer.Option(
            help="adapt: JIIO's preconditioner of the context, the factor d on its FiLM code "
            "(steps d² as large, weight 1/d as large in Anderson; 1 = none; default 0.5)."
        ),
    ] = None,
    solve_iters: Annotated[
        int | None,
        typer.Option(
            help="reconstruct, adapt: cap on every forward and adjoint solve of the naive "
            "method and on JIIO's final refinement, all to tolerance 1e-4 (reconstruct: "
            "default 100, where the naive method's solves reach it; adapt: default 30, the "
            "meta-model's own, where most are truncated). The output says how many solves "
            "did not reach the tolerance."
        ),
    ] = None,
    quality: Annotated[
        bool, typer.Option(help="Also the PSNR table against scikit-image baselines.")
    ] = False,
    count: Annotated[int, typer.Option(help="Held-out images for --quality.")] = 500,
    iterations: Annotated[int, typer.Option(help="JIIO iterations for --quality.")] = 300,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also draw objective against time for both methods (PNG)."),
    ] = None,
    train_task: Annotated[
        str, typer.Option(help="train: denoise (JIIO vs Adam) or adversarial (JIIO vs PGD).")
    ] = "denoise",
    epochs: Annotated[int, typer.Option(help="train: epochs of each run.")] = 1,
    max_train: Annotated[int, typer.Option(help="train: training images of each run.")] = 640,
    eps: Annotated[str, typer.Option(help="attack: budget, e.g. 1.0 or 8/255.")] = "1.0",
    norm: Annotated[str, typer.Option(help="attack: threat model, linf or l2.")] = "l2",
    ways: Annotated[int, typer.Option(help="adapt: classes per episode (1 shot).")] = 5,
    candidates: Annotated[
        int,
        typer.Option(
            help="attack: JIIO iterates compared per image (jiio attack's --candidates; "
            "1 times the bare optimiser)."
        ),
    ] = 4,
    repeat: Annotated[
        int, typer.Option(help="Time each run this many times and report the median.")
    ] = 1,
    compile_graph: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Replay JIIO's iterations as a CUDA graph (GPU only; the CPU ignores it). "
            "engine: time both eager and graph.",
        ),
    ] = False,
    precision: Annotated[
        str, typer.Option(help="engine: arithmetic inside the cell, fp32, bf16 or fp16.")
    ] = "fp32",
    history: Annotated[
        str,
        typer.Option(
            help="engine: precision of Anderson's history, fp32, bf16, or both (fp32,bf16)."
        ),
    ] = "fp32",
    channels: Annotated[int, typer.Option(help="engine: channels of the conv cell.")] = 32,
    size: Annotated[int, typer.Option(help="engine: image side of the conv cell.")] = 16,
    sizes: Annotated[
        str | None,
        typer.Option(
            help="engine: several problem sizes, BATCHxCHANNELSxSIDE comma-separated "
            "(e.g. 16x64x32,64x64x32,256x64x32); overrides --batch-size, --channels, --size."
        ),
    ] = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
    # Typer fills it in; None when the function is called from Python (nothing typed).
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Measure JIIO against the naive inner/outer method on the same model, batch and device."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        opts = BenchOptions(
            batch_size=batch_size,
            naive_steps=naive_steps,
            count=count,
            iterations=iterations,
            memory=memory,
            alpha_x=alpha_x,
            alpha_x_start=alpha_x_start,
            start_iterations=start_iterations,
            x_weight=x_weight,
            film_scale=film_scale,
            solve_iters=solve_iters,
            repeat=repeat,
            channels=channels,
            size=size,
            candidates=candidates,
        )
        torch.manual_seed(common.seed)
        reject_misplaced_bench_options(task.value, explicit_options(ctx))
        if task == BenchTask.engine:
            from jiio_cli.cli.commands.bench_engine import (
                parse_histories,
                parse_sizes,
                run_engine_bench,
            )

            shapes = (
                parse_sizes(sizes)
                if sizes is not None
                else [(opts.batch_size, opts.channels, opts.size)]
            )
            run_engine_bench(shapes, precision, compile_graph, common, parse_histories(history))
            return
        if task == BenchTask.attack:
            from jiio_cli.cli.commands.bench_attack import run_attack_bench

            run_attack_bench(
                checkpoint,
                eps,
                norm,
                opts.batch_size,
                common,
                plot,
                opts.repeat,
                compile_graph,
                opts.candidates,
            )
            return
        if task == BenchTask.adapt:
            from jiio_cli.cli.commands.bench_adapt import run_adapt_bench

            run_adapt_bench(
                checkpoint,
                opts.batch_size,
                opts.naive_steps,
                ways,
                common,
                opts.repeat,
                compile_graph,
                memory=opts.memory,
                alpha_x=opts.alpha_x,
                x_weight=opts.x_weight,
                film_scale=opts.film_scale,
                solve_iters=opts.solve_iters,
                plot=plot,
            )
            return
        if task == BenchTask.train:
            from jiio_cli.cli.commands.bench_train import run_train_bench

            run_train_bench(train_task, epochs, max_train, opts.batch_size, common)
            return
        if task != BenchTask.reconstruct:
            raise NotBuiltError("bench", f"{task.value} benchmark")
        from jiio_cli.cli.commands.bench_reconstruct import run_reconstruct_bench

        run_reconstruct_bench(
            checkpoint, corruption.value, opts, quality, plot, compile_graph, common
        )
