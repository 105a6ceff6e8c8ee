"""Printing results: a table for people or exactly one JSON document for programs.

Results go to stdout and nothing else does, so ``jiio ... --json | jq`` always works;
messages and progress belong on stderr. Colour follows rich, which honours ``NO_COLOR``
and turns itself off when stdout is not a terminal.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import torch
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

__all__ = ["emit", "print_json", "print_table", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types.

    Tensors become numbers or nested lists, paths and devices strings, pydantic models and
    dataclasses dicts; NaN and infinities become ``null`` since JSON has no spelling for them.

    Raises:
        TypeError: for values with no JSON form.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_jsonable(item) for item in items]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump(mode="python"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, PurePath | torch.device | torch.dtype):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item())
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def print_json(document: Any) -> None:
    """Write ``document`` to stdout as one JSON document followed by a newline."""
    text = json.dumps(to_jsonable(document), indent=2, allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _cell(value.item())
    return str(value)


def print_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    caption: str | None = None,
) -> None:
    """Print records as a rich table on stdout.

    Args:
        rows: one mapping per row.
        title: shown above the table.
        columns: column order; defaults to the keys in order of first appearance.
        caption: shown under the table.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    table = Table(title=title, caption=caption)
    for column in columns:
        # Headers keep their full names on a narrow terminal; values wrap instead.
        table.add_column(column, min_width=len(column))
    for row in rows:
        table.add_row(*(_cell(row.get(column, "")) for column in columns))
    # A fresh console per call writes to whatever sys.stdout is now (tests swap it).
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        # Written to a file or a pipe, rich would assume 80 columns and crop the columns
        # that do not fit: print the table at its full width instead.
        unbounded = console.options.update_width(10_000)
        width = console.measure(table, options=unbounded).maximum
        console = Console(file=sys.stdout, width=max(width, 80))
    console.print(table)


def emit(
    result: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    json_output: bool,
    title: str | None = None,
) -> None:
    """Print a command's result once: as JSON with ``--json``, else as a table.

    A mapping is shown as a two-column key/value table, a sequence of mappings as one row
    each. Call it once per command so that ``--json`` output is a single document.
    """
    if json_output:
        print_json(result)
    elif isinstance(result, Mapping):
        print_table(
            [{"key": key, "value": value} for key, value in result.items()],
            title=title,
            columns=["key", "value"],
        )
    else:
        print_table(result, title=title)
