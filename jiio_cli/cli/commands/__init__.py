"""One module per ``jiio`` subcommand; :data:`COMMANDS` lists them in help order."""

from __future__ import annotations

from collections.abc import Callable

from jiio_cli.cli.commands.adapt import adapt
from jiio_cli.cli.commands.attack import attack
from jiio_cli.cli.commands.bench import bench
from jiio_cli.cli.commands.reconstruct import reconstruct
from jiio_cli.cli.commands.sample import sample
from jiio_cli.cli.commands.train import train

__all__ = ["COMMANDS"]

# Each function's name is its command name.
COMMANDS: tuple[Callable[..., None], ...] = (train, reconstruct, attack, adapt, sample, bench)
