"""Command-line options that every command takes, declared once.

A command declares them as parameters with these annotated types and builds a validated
:class:`~jiio_cli.config.CommonOptions` with :func:`common_options` inside its error
boundary, so bad values are reported like every other error. Range checks are left to
pydantic rather than Typer so that they produce the same one-line messages everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer

from jiio_cli.config import CommonOptions

__all__ = [
    "DebugOption",
    "DeviceOption",
    "JsonOption",
    "SeedOption",
    "common_options",
    "explicit_options",
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
CompileOption = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="On a GPU, replay JIIO's iterations as a CUDA graph: one launch per iteration, "
        "same results (the CPU ignores it).",
    ),
]

DebugOption = Annotated[
    bool,
    typer.Option("--debug", help="Show the full traceback when something fails."),
]


def common_options(*, device: str, seed: int, json_output: bool, debug: bool) -> CommonOptions:
    """Validate the shared options; raises pydantic's ValidationError on bad values.

    On a CUDA device, float32 is made strict (no TF32; see ``use_strict_fp32``).
    """
    common = CommonOptions(device=device, seed=seed, json_output=json_output, debug=debug)
    if common.torch_device.type == "cuda":
        from jiio_cli.models.precision import use_strict_fp32

        use_strict_fp32()
    return common


def explicit_options(ctx: typer.Context | None, names: Iterable[str] | None = None) -> set[str]:
    """Parameter names the user typed on the command line (not defaults).

    Lets a command apply per-dataset defaults to options the user left alone, and reject
    ones that do not apply instead of silently ignoring them. ``ctx`` is None when the
    command function is called from Python: then nothing counts as typed.

    Args:
        ctx: the command's context (a ``ctx: typer.Context`` parameter).
        names: restrict the check to these parameter names (default: all).
    """
    if ctx is None:
        return set()
    wanted = ctx.params if names is None else names
    # Compared by name: the enum lives in the click that typer vendors, not a public module.
    return {n for n in wanted if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"}
