"""Validated options shared by the commands, and parsers for their textual forms.

The command line hands raw strings to the parsers here and builds the pydantic models
below, so every command rejects the same bad values with the same one-line messages.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jiio_cli.errors import UsageError

__all__ = [
    "CommonConfig",
    "load_config_file",
    "parse_device",
    "parse_eps",
    "parse_eps_list",
]

# A signed decimal such as 8, 0.3, .5, -1 or 2.5E+3 in ASCII digits. Matching the grammar
# ourselves keeps out the other spellings float() accepts ("nan", "inf", "1_0", non-ASCII
# digits); the sign is allowed here so that negatives get their own message.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_EPS_FORMS = "a non-negative decimal or fraction such as 0.03, 1e-2 or 8/255"

# numpy's seeding takes 32-bit seeds; capping here keeps every random source seedable.
_MAX_SEED = 2**32 - 1


def _parse_decimal(text: str, original: str) -> float:
    """One side of an epsilon: a finite, non-negative decimal."""
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        raise UsageError(f"invalid epsilon {original!r}: expected {_EPS_FORMS}")
    value = float(text)
    if not math.isfinite(value):
        raise UsageError(f"epsilon {original!r} is too large: expected {_EPS_FORMS}")
    if value < 0:
        raise UsageError(f"epsilon {original!r} is negative: expected {_EPS_FORMS}")
    return abs(value)  # turns -0.0 into 0.0


def parse_eps(text: str) -> float:
    """Parse a perturbation budget such as ``0.3``, ``1e-2`` or ``8/255``.

    Zero is accepted so that a sweep can include the unperturbed case.

    Raises:
        UsageError: for empty, malformed, negative, infinite or NaN values, and for a
            fraction whose denominator is zero.
    """
    stripped = text.strip()
    if not stripped:
        raise UsageError(f"empty epsilon: expected {_EPS_FORMS}")
    parts = stripped.split("/")
    if len(parts) == 1:
        return _parse_decimal(parts[0], text)
    if len(parts) != 2:
        raise UsageError(f"invalid epsilon {text!r}: expected {_EPS_FORMS}")
    numerator = _parse_decimal(parts[0], text)
    denominator = _parse_decimal(parts[1], text)
    if denominator == 0:
        raise UsageError(f"epsilon {text!r} divides by zero: expected {_EPS_FORMS}")
    value = numerator / denominator
    if not math.isfinite(value):
        raise UsageError(f"epsilon {text!r} is too large: expected {_EPS_FORMS}")
    return value


def parse_eps_list(text: str) -> list[float]:
    """Parse a comma-separated list of budgets, e.g. ``"0.1,0.2,8/255"``."""
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise UsageError(
            f"invalid epsilon list {text!r}: expected comma-separated values such as 0,0.1,8/255"
        )
    return [parse_eps(item) for item in items]


def parse_device(text: str) -> torch.device:
    """Resolve ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` to a usable device.

    ``auto`` picks the first CUDA device when one is present and the CPU otherwise.

    Raises:
        UsageError: for other spellings, when CUDA is asked for on a machine without it,
            and for an index past the number of CUDA devices.
    """
    name = text.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::([0-9]+))?", name)
    if match is None:
        raise UsageError(f"unknown device {text!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(
            f"device {text!r} needs CUDA, but no CUDA device is available here; "
            "use --device cpu or --device auto"
        )
    if match.group(1) is None:
        return torch.device("cuda")
    index = int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        available = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        plural = "device" if count == 1 else "devices"
        raise UsageError(
            f"device {text!r} does not exist: this machine has {count} CUDA {plural} "
            f"({available}); pick one of those or use --device auto"
        )
    return torch.device("cuda", index)


class CommonConfig(BaseModel):
    """Options every command takes.

    ``device`` is resolved when the model is built (``auto`` becomes ``cpu`` or ``cuda``),
    so the stored value says where the command actually runs.
    """

    # validate_default so that the default "auto" is resolved too.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    device: str = "auto"
    seed: int = Field(default=0, ge=0, le=_MAX_SEED)
    json_output: bool = False
    debug: bool = False

    @field_validator("device")
    @classmethod
    def _resolve_device(cls, value: str) -> str:
        # pydantic only turns ValueError into a ValidationError; re-raise as one so the
        # command line reports it like every other invalid option.
        try:
            return str(parse_device(value))
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    @property
    def torch_device(self) -> torch.device:
        """The resolved device as a :class:`torch.device`."""
        return torch.device(self.device)


def _toml_loads(text: str) -> Any:
    """``tomllib.loads``; on Python 3.10 its backport ``tomli`` (a dependency there only)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib.loads(text)


def load_config_file(path: Path | str, *, section: str | None = None) -> dict[str, Any]:
    """Read option values from a JSON or TOML file.

    Args:
        path: a ``.json`` or ``.toml`` file holding one object/table of option values.
        section: when given, the values are read from that sub-table (e.g. ``solver``),
            and a file without it yields no values.

    Raises:
        UsageError: when the file is missing, unreadable, malformed or not an object.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".json", ".toml"}:
        raise UsageError(f"config file {path} must end in .json or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found; check the path") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory; pass a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    try:
        data = json.loads(text) if suffix == ".json" else _toml_loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError both derive from it
        raise UsageError(f"config file {path} is not valid {suffix[1:].upper()}: {exc}") from None
    if section is not None and isinstance(data, dict):
        data = data.get(section, {})
    if not isinstance(data, dict):
        where = f"section {section!r} of " if section else ""
        raise UsageError(f"{where}config file {path} must hold a table of option values")
    return data
