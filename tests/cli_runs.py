"""Running ``jiio`` commands in this process for the CLI tests."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from jiio_cli.cli.app import app

runner = CliRunner(env={"NO_COLOR": "1"})


def invoke_json(args: list[str]) -> Any:
    """Run ``jiio *args`` (``--json`` among them); it must exit with 0, and its stdout,
    one JSON document, is returned parsed."""
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def reconstruct_on_cpu(*args: str, iterations: int | None = None) -> Result:
    """Run ``jiio reconstruct *args`` on the CPU, within ``iterations`` per round
    (None: the command's default), and return the result whatever its exit code."""
    budget = [] if iterations is None else ["--iterations", str(iterations)]
    return runner.invoke(app, ["reconstruct", *args, "--device", "cpu", *budget])
