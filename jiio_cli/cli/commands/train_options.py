"""The options of ``jiio train``, each declared once, grouped by the tasks that read them.

An option's rich help panel is also its scope: :data:`PANEL_TASKS` names the ``--task``
values that read a panel's options, and ``train`` refuses in one line an option of another
task (:func:`~jiio_cli.cli.options.reject_other_task_options`). Options outside those
panels (the ``Run`` panel and the shared ones) are read by every task. The meta-model
options that the shipped models' recipes set but few runs change are accepted but left out
of ``--help`` (``recipes/README.md`` lists them), so that the help fits two screens.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from jiio_cli.cli.commands.train_defaults import default_help
from jiio_cli.cli.options import (
    AlphaXOption,
    EpsOption,
    IterationsOption,
    NaiveStepsOption,
    NormOption,
    in_panel,
)

__all__ = [
    "COMMON_OPTIONS",
    "PANEL_TASKS",
    "Inner",
    "Task",
    "option_flag",
]


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


RUN = "Run (every task)"
IMAGES = "Images (generate, denoise, inpaint, adversarial)"
DECODER = "Decoder (generate, denoise, inpaint)"
ADVERSARIAL = "Adversarial"
AUGMENT = "Augmentation (generate, denoise, inpaint, meta)"
META = "Meta (few-shot)"
META_DETAILS = "Meta-model details (glyphs, omniglot)"

_DECODER_TASKS = ("generate", "denoise", "inpaint")
PANEL_TASKS: dict[str, tuple[str, ...]] = {
    IMAGES: (*_DECODER_TASKS, "adversarial"),
    DECODER: _DECODER_TASKS,
    AUGMENT: (*_DECODER_TASKS, "meta"),
    ADVERSARIAL: ("adversarial",),
    META: ("meta",),
    META_DETAILS: ("meta",),
}
"""Panel title → the ``--task`` values that read its options."""

COMMON_OPTIONS = frozenset(
    {
        "task",
        "config",
        "out",
        "resume",
        "init",
        "epochs",
        "lr",
        "inner",
        "iterations",
        "inner_iters",
        "width",
        "jac_weight",
        "save_every",
        "max_bad_steps",
        "max_grad_norm",
        "nproc",
        "device",
        "seed",
        "json_output",
        "debug",
    }
)
"""``train`` parameters every task reads, ``--dataset sinusoid`` included: the ``Run``
panel's but ``--data`` and ``--image-size`` (a test checks them against the panel)."""

_SWITCHES = frozenset({"head_context", "metric_context", "resume", "rotations"})


def option_flag(name: str) -> str:
    """How a ``train`` parameter is typed (``latent_dim`` → ``--latent-dim``)."""
    if name == "json_output":
        return "--json"
    flag = name.replace("_", "-")
    return f"--{flag}/--no-{flag}" if name in _SWITCHES else f"--{flag}"


_PER_TASK: dict[str, Any] = {"show_default": False}
"""Options whose default depends on ``--task`` (:mod:`.train_defaults`) say it in words."""


def _run(help: str, *names: str, **more: Any) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, rich_help_panel=RUN, **more)


def _in(panel: str, help: str, *names: str, **more: Any) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, rich_help_panel=panel, **more)


def _detail(help: str) -> typer.models.OptionInfo:
    """A meta-model option that recipes set and few runs change: accepted everywhere,
    left out of ``--help`` so that it fits two screens (recipes/README.md lists them)."""
    return typer.Option(help=help, rich_help_panel=META_DETAILS, hidden=True)


# --- every task
TaskOption = Annotated[
    Task,
    _run("generate, denoise, inpaint (decoders), adversarial or meta.", "--task", metavar="<task>"),
]
DataOption = Annotated[
    list[Path] | None,
    _run(
        "Image folder, .npz or MNIST IDX (default: MNIST-5k); omniglot: its folders.",
        metavar="<path>",
    ),
]
RunFolderOption = Annotated[Path | None, _run("Run folder (default runs/<task>).", "--out")]
ResumeOption = Annotated[bool, _run("Continue the run in --out.", "--resume")]
InitOption = Annotated[
    Path | None,
    _run("Start from a checkpoint's weights (fresh optimiser, schedule)."),
]
EpochsOption = Annotated[int, _run(f"Epochs ({default_help('epochs', 10)}).", **_PER_TASK)]
LrOption = Annotated[float, _run(f"Learning rate ({default_help('lr', 1e-3)}).", **_PER_TASK)]
InnerOption = Annotated[Inner, _run("Inner solve: jiio or a baseline (pgd: adversarial).")]
TrainIterationsOption = in_panel(
    IterationsOption,
    RUN,
    "JIIO iterations per batch (decoders 60, adversarial 20, meta 30; decoder recipes 40).",
    optional=True,
)
InnerItersOption = Annotated[
    int | None, _run("Old name of --iterations.", "--inner-iters", hidden=True)
]
ImageSizeOption = Annotated[
    int, _run(f"Image side ({default_help('image_size', 28)}).", **_PER_TASK)
]
WidthOption = Annotated[int, _run("Channels of the DEQ cell (sinusoid: units).")]
AugmentOption = Annotated[
    str,
    _in(
        AUGMENT,
        "none, shift:N, elastic:A (warp of ~A pixels) or affine:A (A in (0, 2]).",
    ),
]
JacWeightOption = Annotated[
    float, _run(f"Jacobian weight ({default_help('jac_weight', 0.01)}).", **_PER_TASK)
]
SaveEveryOption = Annotated[int, _run("Also checkpoint every N steps (0: off).")]
MaxBadStepsOption = Annotated[int, _run("Stop after N failed (NaN) batches in a row.")]
MaxGradNormOption = Annotated[float | None, _run("Gradient norm clip (0: off; sinusoid 1).")]
NprocOption = Annotated[int | None, _run("Train on N local processes (torchrun).")]

# --- decoder and classifier tasks
ChannelsOption = Annotated[int, _in(IMAGES, "Image channels (1 grey, 3 colour).")]
MaxTrainOption = Annotated[
    int | None,
    _in(IMAGES, f"Use only the first N images ({default_help('max_train', None)}).", **_PER_TASK),
]
TrainBatchSizeOption = Annotated[
    int,
    _in(
        IMAGES, f"Images per batch ({default_help('batch_size', 64)}).", "--batch-size", **_PER_TASK
    ),
]

# --- decoder tasks
SigmaOption = Annotated[str | None, _in(DECODER, "Noise σ on [0, 1] or a range low:high.")]
HoleSizeOption = Annotated[int | None, _in(DECODER, "Side of the square hole (inpaint: 10).")]
MaskRatioOption = Annotated[float, _in(DECODER, "Fraction of pixels missing at random.")]
LatentDimOption = Annotated[int, _in(DECODER, "Size of the latent code.")]
StateResolutionOption = Annotated[
    Literal["half", "full"], _in(DECODER, "DEQ state at half or full image side.")
]
PrecisionOption = Annotated[
    Literal["fp32", "bf16", "fp16"], _in(DECODER, "Arithmetic inside the DEQ cell.")
]

# --- adversarial
TrainEpsOption = in_panel(EpsOption, ADVERSARIAL, "Training budget ε, e.g. 1.0 or 8/255.")
TrainNormOption = in_panel(NormOption, ADVERSARIAL)
PgdStepsOption = Annotated[int, _in(ADVERSARIAL, "PGD steps with --inner pgd.")]
WarmupEpochsOption = Annotated[int, _in(ADVERSARIAL, "Epochs of eps ramping up from 0.")]
NumClassesOption = Annotated[int, _in(ADVERSARIAL, "Number of classes.")]

# --- meta
DatasetOption = Annotated[
    Literal["glyphs", "omniglot", "sinusoid"],
    _in(META, "glyphs (shipped), omniglot (--data) or sinusoid (own defaults)."),
]
WaysOption = Annotated[
    str, _in(META, f"Classes per episode ({default_help('ways', '5')}).", **_PER_TASK)
]
ShotsOption = Annotated[str, _in(META, "Support images per class (sinusoid: points).")]
QueriesOption = Annotated[
    int, _in(META, f"Query images per class ({default_help('queries', 3)}).", **_PER_TASK)
]
TasksPerStepOption = Annotated[int, _in(META, "Episodes per update.")]
EpisodesPerEpochOption = Annotated[int, _in(META, "Episodes per epoch.")]
ContextDimOption = Annotated[int, _in(META, "Size of the FiLM context.")]
TrainNaiveStepsOption = in_panel(NaiveStepsOption, META, "Adam steps with --inner naive.")
HyperStepOption = Annotated[float, _in(META, "Hypergradient step η (0: first order).")]
TrainAlphaXOption = in_panel(AlphaXOption, META, "JIIO's step α_x on the context.")
ContextStepOption = Annotated[
    float | None, _in(META, "Old name of --alpha-x.", "--context-step", hidden=True)
]
ReadoutOption = Annotated[
    Literal["head", "centroids"],
    _in(META, f"Query read-out ({default_help('readout', 'head')}).", **_PER_TASK),
]
ModelOption = Annotated[
    Literal["deq", "protonet"], _in(META, "deq (FiLM DEQ) or protonet (baseline).")
]

# --- meta details: mostly set by recipes
ContextPenaltyOption = Annotated[float, _detail("λ of the penalty λ·mean(v²).")]
HeadContextOption = Annotated[bool, _detail("Context offsets the head too.")]
SupportLossOption = Annotated[
    Literal["head", "centroids", "pseudo-queries"],
    _detail("What the context is fitted to (pseudo-queries: jittered copies)."),
]
PseudoAugmentOption = Annotated[str, _detail("Jitter: elastic:A, affine:A or both.")]
PseudoCopiesOption = Annotated[int, _detail("Pseudo-queries per support.")]
MetricContextOption = Annotated[bool, _detail("Context weighs the distance.")]
TransductiveWeightOption = Annotated[
    float, _detail("β: the inner problem also fits centroid offsets to the queries (0: off).")
]
OffsetWeightOption = Annotated[float, _detail("ω: penalty on the centroid offsets (β > 0).")]
EncoderOption = Annotated[
    Literal["injection", "conv4"], _detail("Image injection, or a conv encoder + DEQ.")
]
PreprocessOption = Annotated[
    Literal["resize", "crop"], _detail("Drawings reduced whole or cropped to the ink.")
]
RotationsOption = Annotated[bool, _detail("omniglot: rotated extra classes.")]
EpisodeKindsOption = Annotated[str, _detail("Episodes: across, within or both.")]
