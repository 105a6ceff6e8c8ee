"""``jiio bench``: JIIO against the naive method, side by side, in one process.

One module per task does the work: ``bench_reconstruct`` (time to equal objective on a
held-out batch, and with ``--quality`` a PSNR table against classical baselines),
``bench_attack`` (JIIO attack against PGD at growing budgets), ``bench_adapt`` (few-shot
adaptation against the naive inner loop), ``bench_train`` (training with either inner
solve) and ``bench_engine`` (the solver's own cost per iteration). The options' help
panels say which tasks read them; an option of another task is refused in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import typer
from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    AlphaXOption,
    BatchSizeOption,
    BenchCheckpointOption,
    CompileOption,
    ConfigOption,
    DebugOption,
    DeviceOption,
    EpsOption,
    IterationsOption,
    JsonOption,
    MemoryOption,
    NaiveStepsOption,
    Norm,
    NormOption,
    PlotOption,
    RepeatOption,
    SeedOption,
    XWeightOption,
    common_options,
    in_panel,
    reject_other_task_options,
)
from jiio_cli.config import CommonConfig

__all__ = ["PANEL_TASKS", "bench"]


class BenchTask(str, Enum):
    reconstruct = "reconstruct"
    engine = "engine"
    attack = "attack"
    adapt = "adapt"
    train = "train"


class Corruptions(str, Enum):
    inpaint = "inpaint"
    denoise = "denoise"


COMPARE = "Model under test (reconstruct, attack, adapt)"
GRAPH = "CUDA graphs (reconstruct, engine, attack, adapt)"
SOLVER = "JIIO and the naive method (reconstruct, adapt)"
RECONSTRUCT = "Reconstruct"
ATTACK = "Attack"
ADAPT = "Adapt"
TRAIN = "Train"
ENGINE = "Engine"
PANEL_TASKS: dict[str, tuple[str, ...]] = {
    COMPARE: ("reconstruct", "attack", "adapt"),
    GRAPH: ("reconstruct", "engine", "attack", "adapt"),
    SOLVER: ("reconstruct", "adapt"),
    RECONSTRUCT: ("reconstruct",),
    ATTACK: ("attack",),
    ADAPT: ("adapt",),
    TRAIN: ("train",),
    ENGINE: ("engine",),
}
"""Panel title → the ``--task`` values that read its options; the others read every task."""


def _in(panel: str, help: str, *names: str) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel)


BenchTaskOption = Annotated[BenchTask, typer.Option("--task", help="What to measure.")]
Checkpoint = in_panel(BenchCheckpointOption, COMPARE)
Plot = in_panel(PlotOption, COMPARE)
Repeat = in_panel(RepeatOption, COMPARE)
Compile = in_panel(
    CompileOption, GRAPH, "Replay JIIO's iterations as a CUDA graph (engine: time both ways)."
)
NaiveSteps = in_panel(NaiveStepsOption, SOLVER)
Memory = in_panel(MemoryOption, SOLVER, "Anderson memory of JIIO (default 10).")
AlphaX = in_panel(AlphaXOption, SOLVER, "JIIO's step size α_x (default 0.02; adapt 2.0).")
XWeight = in_panel(XWeightOption, SOLVER, "Weight of x in Anderson's least squares (10; adapt 30).")
SolveIters = Annotated[
    int | None,
    _in(
        SOLVER,
        "Cap on the naive method's solves and JIIO's refinement, to tol 1e-4 (default "
        "100; adapt 30); the output counts the solves that did not reach it.",
    ),
]
CorruptionOption = Annotated[Corruptions, _in(RECONSTRUCT, "Observation model.", "--corruption")]
AlphaXStart = Annotated[
    float | None, _in(RECONSTRUCT, "α_x of the first --start-iterations (default 0.06).")
]
StartIterations = Annotated[
    int | None, _in(RECONSTRUCT, "Iterations at --alpha-x-start (default 30; 0: none).")
]
Quality = Annotated[bool, _in(RECONSTRUCT, "Also the PSNR table against scikit-image.")]
Count = Annotated[int, _in(RECONSTRUCT, "Held-out images for --quality.")]
Iterations = in_panel(IterationsOption, RECONSTRUCT, "JIIO iterations for --quality.")
BenchEps = in_panel(EpsOption, ATTACK)
BenchNorm = in_panel(NormOption, ATTACK)
Baseline = Annotated[
    Literal["pgd", "apgd"], _in(ATTACK, "What JIIO is timed against: PGD or APGD-CE.")
]
Candidates = Annotated[int, _in(ATTACK, "JIIO iterates compared per image (1: the last).")]
Ways = Annotated[int, _in(ADAPT, "Classes per episode (1 shot).")]
BenchData = Annotated[
    list[Path] | None,
    _in(
        ADAPT,
        "Omniglot archives or folders, repeatable; their held-out alphabets (default: the "
        "data recorded in the checkpoint, else the glyph meta-test split).",
    ),
]
BenchTransductiveWeight = Annotated[
    float | None,
    _in(ADAPT, "β of the queries' term in the inner problem (0: support only; default: model's)."),
]
FilmScale = Annotated[
    float | None, _in(ADAPT, "Preconditioner d of the FiLM context (1: none; default 0.5).")
]
TrainTask = Annotated[
    Literal["denoise", "adversarial"], _in(TRAIN, "denoise (JIIO vs Adam) or adversarial (vs PGD).")
]
Epochs = Annotated[int, _in(TRAIN, "Epochs of each run.")]
MaxTrain = Annotated[int, _in(TRAIN, "Training images of each run.")]
Precision = Annotated[
    Literal["fp32", "bf16", "fp16"], _in(ENGINE, "Arithmetic inside the conv cell.")
]
History = Annotated[str, _in(ENGINE, "Precision of Anderson's history: fp32, bf16 or fp32,bf16.")]
Channels = Annotated[int, _in(ENGINE, "Channels of the conv cell.")]
Size = Annotated[int, _in(ENGINE, "Image side of the conv cell.")]
Sizes = Annotated[
    str | None, _in(ENGINE, "Several sizes BATCHxCHANNELSxSIDE, e.g. 16x64x32,64x64x32.")
]


class BenchCommandConfig(BaseModel):
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
    transductive_weight: float | None = Field(default=None, ge=0, le=1000)
    solve_iters: int | None = Field(default=None, ge=1, le=10000)
    repeat: int = Field(ge=1, le=100)
    channels: int = Field(ge=1, le=1024)
    candidates: int = Field(ge=1, le=100)
    size: int = Field(ge=4, le=512)


def bench(
    # Typer fills it in; None when the function is called from Python (nothing typed).
    ctx: typer.Context = None,  # type: ignore[assignment]
    task: BenchTaskOption = BenchTask.reconstruct,
    config: ConfigOption = None,
    batch_size: BatchSizeOption = 64,
    checkpoint: Checkpoint = None,
    plot: Plot = None,
    repeat: Repeat = 1,
    compile_graph: Compile = False,
    naive_steps: NaiveSteps = 50,
    memory: Memory = None,
    alpha_x: AlphaX = None,
    x_weight: XWeight = None,
    solve_iters: SolveIters = None,
    corruption: CorruptionOption = Corruptions.inpaint,
    alpha_x_start: AlphaXStart = None,
    start_iterations: StartIterations = None,
    quality: Quality = False,
    count: Count = 500,
    iterations: Iterations = 300,
    eps: BenchEps = "1.0",
    norm: BenchNorm = Norm.l2,
    baseline: Baseline = "pgd",
    candidates: Candidates = 4,
    ways: Ways = 5,
    film_scale: FilmScale = None,
    data: BenchData = None,
    transductive_weight: BenchTransductiveWeight = None,
    train_task: TrainTask = "denoise",
    epochs: Epochs = 1,
    max_train: MaxTrain = 640,
    precision: Precision = "fp32",
    history: History = "fp32",
    channels: Channels = 32,
    size: Size = 16,
    sizes: Sizes = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Measure JIIO against the naive inner/outer method on the same model, batch and device."""
    values = {name: value for name, value in locals().items() if name != "ctx"}
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        fields = BenchCommandConfig.model_fields
        opts = BenchCommandConfig(**{k: v for k, v in values.items() if k in fields})
        torch.manual_seed(common.seed)
        reject_other_task_options(ctx, task.value, PANEL_TASKS)
        if plot is not None:
            from jiio_cli.plot import require_matplotlib

            require_matplotlib()  # before the bench runs, not after minutes of it
        _RUNNERS[task](values, opts, common)


def _engine(values: Mapping[str, Any], opts: BenchCommandConfig, common: CommonConfig) -> None:
    from jiio_cli.cli.commands.bench_engine import parse_histories, parse_sizes, run_engine_bench

    sizes = values["sizes"]
    shapes = (
        parse_sizes(sizes) if sizes is not None else [(opts.batch_size, opts.channels, opts.size)]
    )
    histories = parse_histories(values["history"])
    run_engine_bench(shapes, values["precision"], values["compile_graph"], common, histories)


def _attack(values: Mapping[str, Any], opts: BenchCommandConfig, common: CommonConfig) -> None:
    from jiio_cli.cli.commands.bench_attack import run_attack_bench

    run_attack_bench(
        values["checkpoint"],
        values["eps"],
        values["norm"].value,
        opts.batch_size,
        common,
        values["plot"],
        opts.repeat,
        values["compile_graph"],
        opts.candidates,
        values["baseline"],
    )


def _adapt(values: Mapping[str, Any], opts: BenchCommandConfig, common: CommonConfig) -> None:
    from jiio_cli.cli.commands.bench_adapt import run_adapt_bench

    run_adapt_bench(
        values["checkpoint"],
        opts.batch_size,
        opts.naive_steps,
        values["ways"],
        common,
        opts.repeat,
        values["compile_graph"],
        memory=opts.memory,
        alpha_x=opts.alpha_x,
        x_weight=opts.x_weight,
        film_scale=opts.film_scale,
        solve_iters=opts.solve_iters,
        plot=values["plot"],
        data=values["data"],
        transductive_weight=opts.transductive_weight,
    )


def _train(values: Mapping[str, Any], opts: BenchCommandConfig, common: CommonConfig) -> None:
    from jiio_cli.cli.commands.bench_train import run_train_bench

    run_train_bench(
        values["train_task"], values["epochs"], values["max_train"], opts.batch_size, common
    )


def _reconstruct(values: Mapping[str, Any], opts: BenchCommandConfig, common: CommonConfig) -> None:
    from jiio_cli.cli.commands.bench_reconstruct import run_reconstruct_bench

    run_reconstruct_bench(
        values["checkpoint"],
        values["corruption"].value,
        opts,
        values["quality"],
        values["plot"],
        values["compile_graph"],
        common,
    )


_RUNNERS = {
    BenchTask.engine: _engine,
    BenchTask.attack: _attack,
    BenchTask.adapt: _adapt,
    BenchTask.train: _train,
    BenchTask.reconstruct: _reconstruct,
}
