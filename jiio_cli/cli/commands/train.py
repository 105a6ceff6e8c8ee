"""``jiio train``: training deep equilibrium models for the JIIO tasks.

Not built yet: the command checks its options, then exits with code 1 and says so.
"""

from __future__ import annotations

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    DebugOption,
    DeviceOption,
    JsonOption,
    SeedOption,
    common_options,
)
from jiio_cli.errors import NotBuiltError

__all__ = ["train"]


def train(
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Train a deep equilibrium model for one of the tasks (not built yet in this version)."""
    with error_boundary(debug=debug):
        common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        raise NotBuiltError("train", "training")
