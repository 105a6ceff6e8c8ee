"""Command-line options shared by the commands, each declared once.

A concept has one name, one help text, one type display and one default display in every
command that takes it: a command declares the parameter with the annotated type from here
(``seed: SeedOption = 0``). Range checks are left to pydantic rather than Typer so that
they produce the same one-line messages everywhere (see :mod:`jiio_cli.cli.boundary`).

Commands with a ``--task`` (``train``, ``bench``) group their options in rich help panels;
a panel lists the tasks that read its options, and :func:`reject_other_task_options`
refuses, in one line, an option of another task instead of silently ignoring it. The
panel is the single declaration of an option's scope.

``--config FILE`` (:data:`ConfigOption`) reads a recipe: option values in TOML or JSON
that become the command's defaults, so options typed on the command line override them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from jiio_cli.config import CommonConfig, load_config_file
from jiio_cli.errors import UsageError

__all__ = [
    "AllowUnconvergedOption",
    "AlphaXOption",
    "BatchSizeOption",
    "BenchCheckpointOption",
    "ClassifierCheckpointOption",
    "CompileOption",
    "ConfigOption",
    "DebugOption",
    "DecoderCheckpointOption",
    "DeviceOption",
    "EpsOption",
    "IterationsOption",
    "JsonOption",
    "MemoryOption",
    "MetaCheckpointOption",
    "NaiveStepsOption",
    "Norm",
    "NormOption",
    "PlotOption",
    "RepeatOption",
    "SeedOption",
    "TolOption",
    "XWeightOption",
    "common_options",
    "explicit_options",
    "in_panel",
    "option_flag",
    "reject_other_task_options",
]


class Norm(str, Enum):
    """Threat model of a perturbation budget."""

    linf = "linf"
    l2 = "l2"


def _read_recipe(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    """Eager callback of ``--config``: the file's values become the command's defaults.

    Click looks a parameter's default up in ``ctx.default_map`` before its declared
    default, and a value typed on the command line wins over both; so "flags override the
    file" is Click's own precedence. Keys are parameter names, with ``-`` or ``_``.
    """
    if value is None or ctx.resilient_parsing:
        return value
    try:
        values = load_config_file(value)
    except UsageError as error:
        raise typer.BadParameter(str(error), ctx=ctx, param=param) from None
    known = {p.name: p for p in ctx.command.params if p.name not in (None, "config")}
    recipe: dict[str, Any] = {}
    for key, item in values.items():
        name = key.replace("-", "_")
        target = known.get(name)
        if target is None or not getattr(target, "expose_value", True):
            raise typer.BadParameter(
                f"{value} sets {key!r}, which is not an option of this command",
                ctx=ctx,
                param=param,
            )
        # Click expects a list for a repeatable option; a recipe may give one value.
        multiple = getattr(target, "multiple", False)
        recipe[name] = [item] if multiple and not isinstance(item, list) else item
    ctx.default_map = {**(ctx.default_map or {}), **recipe}
    return value


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Recipe: a TOML or JSON file of option values (names as in this help, e.g. "
        "epochs = 16); options typed on the command line override it. See recipes/.",
        callback=_read_recipe,
        is_eager=True,
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where to run: auto, cpu, cuda or cuda:N. auto uses CUDA when it is available.",
    ),
]
SeedOption = Annotated[
    int,
    typer.Option("--seed", help="Random seed (0 to 2**32-1) that makes runs repeatable."),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the result as one JSON document on stdout."),
]
DebugOption = Annotated[
    bool,
    typer.Option("--debug", help="Show the full traceback when something fails."),
]
CompileOption = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="On a GPU, replay JIIO's iterations as a CUDA graph: one launch per iteration, "
        "same results (the CPU ignores it).",
    ),
]


def _checkpoint(model: str) -> Any:
    return typer.Option(
        "--checkpoint", "-c", help=f"{model} checkpoint (.safetensors; default: the shipped one)."
    )


DecoderCheckpointOption = Annotated[Path | None, _checkpoint("Decoder")]
ClassifierCheckpointOption = Annotated[Path | None, _checkpoint("Classifier")]
MetaCheckpointOption = Annotated[Path | None, _checkpoint("Meta-model")]
BenchCheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="The model under test (.safetensors; default: the shipped one): a decoder for "
        "reconstruct, a classifier for attack, a meta-model for adapt.",
    ),
]
BatchSizeOption = Annotated[
    int,
    typer.Option("--batch-size", help="Examples solved together: images, or tasks for few-shot."),
]
NormOption = Annotated[
    Norm, typer.Option("--norm", help="Threat model: the linf (L∞) or l2 (L2) ball of radius eps.")
]
EpsOption = Annotated[
    str,
    typer.Option("--eps", help="Perturbation budget ε: a decimal or fraction, e.g. 1.0 or 8/255."),
]
IterationsOption = Annotated[int, typer.Option("--iterations", help="JIIO iterations of a solve.")]
MemoryOption = Annotated[
    int, typer.Option("--memory", help="Anderson memory of JIIO (past iterates it mixes).")
]
AlphaXOption = Annotated[
    float, typer.Option("--alpha-x", help="JIIO's step size α_x on the optimised input.")
]
TolOption = Annotated[
    float, typer.Option("--tol", help="Residual tolerance under which a solve counts as converged.")
]
AllowUnconvergedOption = Annotated[
    bool,
    typer.Option(
        "--allow-unconverged",
        help="Keep the results (and write their files) and exit 0 even if some solve did not "
        "converge; a warning names them.",
    ),
]
NaiveStepsOption = Annotated[
    int,
    typer.Option(
        "--naive-steps", help="Adam steps of the naive method (each with full DEQ solves)."
    ),
]
XWeightOption = Annotated[
    float,
    typer.Option(
        "--x-weight",
        help="Weight of the x block in JIIO's Anderson least squares (1: the paper's "
        "unweighted stacked state).",
    ),
]
PlotOption = Annotated[
    Path | None,
    typer.Option("--plot", help="Also draw objective against time for both methods (PNG)."),
]
RepeatOption = Annotated[
    int, typer.Option("--repeat", help="Time each run this many times and report the median.")
]


def in_panel(
    option: Any, panel: str | None, help: str | None = None, *, optional: bool = False
) -> Any:
    """The shared ``option`` (an ``Annotated[type, typer.Option(...)]`` from here) under a
    command's rich help panel ``panel`` (None: the default one), with ``help`` when the
    command has more to say of what it does there, and with ``optional`` its type also
    taking None (a default the command resolves itself). The name stays the shared one."""
    info = option.__metadata__[0]
    # Inside Annotated, typer keeps an option's first name where a default would go.
    first = (info.default,) if isinstance(info.default, str) else ()
    names = (*first, *info.param_decls)
    kind = option.__origin__ | None if optional else option.__origin__
    return Annotated[  # type: ignore[valid-type]
        kind, typer.Option(*names, help=help or info.help, rich_help_panel=panel)
    ]


def common_options(*, device: str, seed: int, json_output: bool, debug: bool) -> CommonConfig:
    """Validate the shared options; raises pydantic's ValidationError on bad values.

    On a CUDA device, float32 is made strict (no TF32; see ``use_strict_fp32``).
    """
    common = CommonConfig(device=device, seed=seed, json_output=json_output, debug=debug)
    if common.torch_device.type == "cuda":
        from jiio_cli.models.precision import use_strict_fp32

        use_strict_fp32()
    return common


def explicit_options(ctx: typer.Context | None, names: Iterable[str] | None = None) -> set[str]:
    """Parameter names the user gave: typed on the command line or set by ``--config``.

    Lets a command apply per-dataset defaults to options the user left alone, and reject
    ones that do not apply instead of silently ignoring them. ``ctx`` is None when the
    command function is called from Python: then nothing counts as given.

    Args:
        ctx: the command's context (a ``ctx: typer.Context`` parameter).
        names: restrict the check to these parameter names (default: all).
    """
    if ctx is None:
        return set()
    wanted = ctx.params if names is None else names
    # Compared by name: the enum lives in the click that typer vendors, not a public module.
    given = {"COMMANDLINE", "DEFAULT_MAP"}
    return {n for n in wanted if getattr(ctx.get_parameter_source(n), "name", "") in given}


def option_flag(ctx: typer.Context, name: str) -> str:
    """How parameter ``name`` of the command is typed (``latent_dim`` → ``--latent-dim``,
    a switch ``--rotations/--no-rotations``)."""
    for param in ctx.command.params:
        if param.name == name:
            first = next(o for o in param.opts if o.startswith("--"))
            return "/".join([first, *param.secondary_opts])
    return "--" + name.replace("_", "-")


def reject_other_task_options(
    ctx: typer.Context | None, task: str, panel_tasks: Mapping[str, tuple[str, ...]]
) -> None:
    """UsageError naming the first given option that ``task`` does not read.

    An option's rich help panel says which tasks read it: ``panel_tasks`` maps a panel's
    title to those tasks; options outside these panels are read by every task.

    Args:
        ctx: the command's context (None from Python: nothing is checked).
        task: the ``--task`` value.
        panel_tasks: panel title → the ``--task`` values that read its options.
    """
    if ctx is None:
        return
    panels = {p.name: getattr(p, "rich_help_panel", None) for p in ctx.command.params}
    for name in sorted(explicit_options(ctx)):
        owners = panel_tasks.get(panels.get(name) or "")
        if owners is not None and task not in owners:
            raise UsageError(
                f"{option_flag(ctx, name)} does not apply to --task {task} "
                f"(it is for --task {', '.join(owners)}); remove it"
            )
