"""The ``jiio`` Typer application and its console entry point."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import torch
import typer
from typer.core import TyperGroup

from jiio_cli import __version__
from jiio_cli.cli.commands import COMMANDS

__all__ = ["app", "main"]

# Click's exception classes, found from typer's own (typer versions differ in whether
# they vendor click).
_USAGE_ERROR: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError"
)
_CLICK_EXCEPTION: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)


class OneLineErrorGroup(TyperGroup):
    """The command group, with Click's own usage errors (unknown option, bad choice,
    missing argument) reported like every other error: one line, exit code 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            value = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            sys.stderr.write("error: aborted\n")
            sys.exit(1)
        except _CLICK_EXCEPTION as exc:
            where = ""
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, _USAGE_ERROR) and ctx is not None:
                where = f" (see '{ctx.command_path} --help')"
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            sys.stderr.write(f"error: {message}{where}\n")
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        # Without standalone mode Click returns the exit code of typer.Exit instead of
        # exiting; a command that finished normally returns None.
        sys.exit(value if isinstance(value, int) else 0)


app = typer.Typer(
    cls=OneLineErrorGroup,
    name="jiio",
    help="Joint inference and input optimisation (JIIO) in deep equilibrium networks.",
    no_args_is_help=True,
    # Errors are reported by the commands' error boundary; a rich traceback would bury them.
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _command in COMMANDS:
    app.command()(_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"jiio {__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the jiio and torch versions and exit.",
        ),
    ] = False,
) -> None:
    """Joint inference and input optimisation (JIIO) in deep equilibrium networks."""


def main() -> None:
    """Console entry point of ``jiio``."""
    app(prog_name="jiio")
