"""Strict, JSON-friendly base for the model configs stored in checkpoints."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["ModelConfig"]

_C = TypeVar("_C", bound="ModelConfig")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of the frozen model configs: plain fields of type ``int`` or ``bool``.

    Subclasses declare their fields and check value ranges in ``__post_init__`` (call
    ``super().__post_init__()`` first: it checks the field types). ``from_dict`` never
    ignores a key: unknown keys and values of the wrong type raise ``ValueError``, because
    a silently dropped option in a checkpoint or a config file is a silent wrong result.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = hints[field.name]
            # bool is a subclass of int: reject True where a count is expected.
            ok = (
                isinstance(value, bool)
                if expected is bool
                else isinstance(value, expected) and not isinstance(value, bool)
            )
            if not ok:
                raise ValueError(
                    f"{type(self).__name__}.{field.name} must be {expected.__name__}, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Field values as a dict of plain JSON types."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        """Build a config from a mapping; missing keys take their defaults.

        Raises:
            ValueError: for a non-mapping, an unknown key, or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__} must be a mapping, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s): {', '.join(unknown)}; "
                f"known keys: {', '.join(known)}"
            )
        return cls(**data)
