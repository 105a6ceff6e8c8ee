"""The ``jiio`` Typer application and its console entry point."""

from __future__ import annotations

from typing import Annotated

import torch
import typer

from jiio_cli import __version__
from jiio_cli.cli.commands import COMMANDS

__all__ = ["app", "main"]

app = typer.Typer(
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
