"""Checkpoints: tensors in a safetensors file plus string metadata describing the run.

The file never holds pickled objects, so loading one cannot execute code. Metadata keys:

``format`` (always ``jiio-checkpoint``), ``format_version``, ``task``, ``model_kind``,
``model_config``/``training_config``/``metrics`` (JSON), ``step``, ``jiio_version``,
``torch_version`` and ``created`` (UTC, ISO 8601). Callers may add their own string keys.

Writes are atomic: a crash or a full disk leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from jiio_cli import __version__
from jiio_cli.data.atomic import atomic_write
from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_PREFIX",
    "Checkpoint",
    "load_checkpoint",
    "load_module_state",
    "model_tensors",
    "save_checkpoint",
    "save_checkpoint_like",
    "state_dict_to_tensors",
]

FORMAT = "jiio-checkpoint"
FORMAT_VERSION = 1

_RESERVED_KEYS = frozenset(
    {
        "format",
        "format_version",
        "task",
        "model_kind",
        "model_config",
        "training_config",
        "step",
        "metrics",
        "jiio_version",
        "torch_version",
        "created",
    }
)

# At most this many names are listed in a mismatch message, to keep it on one line.
_MAX_NAMES = 3


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its tensors and parsed metadata.

    Attributes:
        path: the file it was read from.
        tensors: name -> tensor, on the device asked for.
        task: the task the model was trained for, e.g. ``adversarial``.
        model_kind: which model family the tensors belong to.
        model_config: keyword arguments that rebuild the model.
        training_config: settings of the run that produced it, if recorded.
        step: training step at which it was written.
        metrics: evaluation results recorded with it (non-finite numbers read as ``None``).
        format_version: version of this file layout.
        jiio_version, torch_version, created: provenance, ``None`` when absent.
        extra: any further string metadata written by the caller.
    """

    path: Path
    tensors: dict[str, Tensor]
    task: str
    model_kind: str
    model_config: dict[str, Any]
    training_config: dict[str, Any] | None
    step: int
    metrics: dict[str, Any]
    format_version: int = FORMAT_VERSION
    jiio_version: str | None = None
    torch_version: str | None = None
    created: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- saving


def _finite_or_none(value: Any) -> Any:
    """Replace NaN/inf by None so metrics stay strict JSON (a diverged loss is still saved)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable with finite numbers: {exc}") from None


def _prepare_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors that share no memory, as safetensors requires."""
    prepared: dict[str, Tensor] = {}
    seen_storages: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, Tensor):
            raise ValueError(f"checkpoint entries must map str to Tensor, got {name!r}")
        if tensor.layout != torch.strided:
            raise ValueError(f"tensor {name!r} is {tensor.layout}; only dense tensors are saved")
        cpu = tensor.detach().to("cpu").contiguous()
        pointer = cpu.untyped_storage().data_ptr()
        # Tied weights share storage; safetensors refuses that, so later ones get a copy.
        if cpu.numel() and pointer in seen_storages:
            cpu = cpu.clone()
        seen_storages.add(cpu.untyped_storage().data_ptr())
        prepared[name] = cpu
    return prepared


def save_checkpoint(
    path: Path | str,
    tensors: Mapping[str, Tensor],
    *,
    task: str,
    model_kind: str,
    model_config: Mapping[str, Any],
    step: int,
    metrics: Mapping[str, Any],
    training_config: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` and their metadata to ``path`` atomically; return the path.

    Missing parent folders are created. The file is written to a temporary file in the same
    folder, synced to disk and renamed over ``path``, so readers never see a partial file.

    Raises:
        UsageError: when ``path`` is a directory.
        JiioError: when the file cannot be written (permissions, full disk).
        ValueError: for invalid arguments (a programming error, not a user one).
    """
    path = Path(path)
    if not task or not model_kind:
        raise ValueError("task and model_kind must be non-empty")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    extra = dict(extra or {})
    clashing = sorted(_RESERVED_KEYS.intersection(extra))
    if clashing:
        raise ValueError(f"extra metadata keys {clashing} are reserved")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ValueError("extra metadata must map str to str")
    metadata = {
        **extra,
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "task": task,
        "model_kind": model_kind,
        "model_config": _to_json(dict(model_config), "model_config"),
        "training_config": _to_json(
            None if training_config is None else dict(training_config), "training_config"
        ),
        "step": str(step),
        "metrics": _to_json(_finite_or_none(dict(metrics)), "metrics"),
        "jiio_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    prepared = _prepare_tensors(tensors)

    def write(file: BinaryIO) -> None:
        file.write(safetensors.torch.save(prepared, metadata=metadata))

    atomic_write(path, write, "checkpoint")
    return path


def save_checkpoint_like(
    path: Path | str,
    source: Checkpoint,
    tensors: Mapping[str, Tensor] | None = None,
    *,
    metrics: Mapping[str, Any] | None = None,
    training_config: Mapping[str, Any] | None = None,
    extra: Mapping[str, str] | None = None,
    model_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``source``'s model (task, model kind, model config and step)
    to ``path`` atomically, with each of its tensors, metrics, training config, extra
    metadata and model config replaced where given (``None`` keeps the source's); return
    the path."""
    return save_checkpoint(
        path,
        source.tensors if tensors is None else tensors,
        task=source.task,
        model_kind=source.model_kind,
        model_config=source.model_config if model_config is None else model_config,
        step=source.step,
        metrics=source.metrics if metrics is None else metrics,
        training_config=source.training_config if training_config is None else training_config,
        extra=source.extra if extra is None else extra,
    )


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Report anything the safetensors reader raises as a damaged file.

    The reader raises its own error type, OSError, ValueError and others for truncated,
    tampered or foreign files; all of them mean the same thing to the user.
    """
    try:
        yield
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise JiioError(
            f"checkpoint {path} is damaged or not a safetensors file ({reason}); "
            "pass a checkpoint written by jiio"
        ) from exc


def _json_field(path: Path, raw: Mapping[str, str], key: str, *, required: bool) -> Any:
    if key not in raw:
        if required:
            raise JiioError(f"checkpoint {path} lacks the {key!r} metadata; it is damaged")
        return None
    try:
        return json.loads(raw[key])
    except ValueError:
        raise JiioError(
            f"checkpoint {path} has {key} metadata that is not valid JSON; it is damaged"
        ) from None


def _check_task(path: Path, task: str, expected: str | set[str] | frozenset[str] | None) -> None:
    if expected is None:
        return
    allowed = {expected} if isinstance(expected, str) else set(expected)
    if task in allowed:
        return
    wanted = " or ".join(repr(name) for name in sorted(allowed))
    raise UsageError(
        f"checkpoint {path} was trained for task {task!r}, but this command expects {wanted}; "
        "pass a checkpoint trained for that task"
    )


def _parse_metadata(
    path: Path, raw: Mapping[str, str], expected_task: str | set[str] | frozenset[str] | None
) -> dict[str, Any]:
    """Validate the metadata of a checkpoint and decode it into Checkpoint fields."""
    fmt = raw.get("format")
    if fmt != FORMAT:
        found = "no format metadata" if fmt is None else f"format {fmt!r}"
        raise JiioError(
            f"{path} is not a jiio checkpoint ({found}); pass a checkpoint written by jiio"
        )
    version_text = raw.get("format_version", "")
    if not re.fullmatch(r"\d{1,9}", version_text) or int(version_text) < 1:
        raise JiioError(f"checkpoint {path} has an invalid format_version; it is damaged")
    version = int(version_text)
    if version > FORMAT_VERSION:
        raise JiioError(
            f"checkpoint {path} uses format version {version}, but jiio {__version__} reads "
            f"up to version {FORMAT_VERSION}; upgrade jiio to load it"
        )
    task = raw.get("task", "")
    model_kind = raw.get("model_kind", "")
    if not task or not model_kind:
        raise JiioError(f"checkpoint {path} lacks its task or model_kind metadata; it is damaged")
    _check_task(path, task, expected_task)

    model_config = _json_field(path, raw, "model_config", required=True)
    training_config = _json_field(path, raw, "training_config", required=False)
    metrics = _json_field(path, raw, "metrics", required=False)
    if not isinstance(model_config, dict):
        raise JiioError(f"checkpoint {path} has a model_config that is not a JSON object")
    if training_config is not None and not isinstance(training_config, dict):
        raise JiioError(f"checkpoint {path} has a training_config that is not a JSON object")
    if metrics is not None and not isinstance(metrics, dict):
        raise JiioError(f"checkpoint {path} has metrics that are not a JSON object")
    step_text = raw.get("step", "0")
    if not re.fullmatch(r"\d{1,18}", step_text):
        raise JiioError(f"checkpoint {path} has an invalid step {step_text!r}; it is damaged")

    return {
        "task": task,
        "model_kind": model_kind,
        "model_config": model_config,
        "training_config": training_config,
        "step": int(step_text),
        "metrics": metrics or {},
        "format_version": version,
        "jiio_version": raw.get("jiio_version"),
        "torch_version": raw.get("torch_version"),
        "created": raw.get("created"),
        "extra": {key: value for key, value in raw.items() if key not in _RESERVED_KEYS},
    }


def load_checkpoint(
    path: Path | str,
    *,
    expected_task: str | set[str] | frozenset[str] | None = None,
    device: torch.device | str = "cpu",
) -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    The metadata is checked before any tensor is read, so a wrong file fails fast.

    Args:
        path: the ``.safetensors`` file.
        expected_task: the task (or tasks) the caller can use; others are refused.
        device: where to put the tensors.

    Raises:
        UsageError: for a missing path, a directory, or a checkpoint of another task.
        JiioError: for a file that is not a safetensors file, is truncated or tampered
            with, is not a jiio checkpoint, comes from a newer format version, or has
            invalid metadata.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint {path} not found; check the path")
    if path.is_dir():
        raise UsageError(f"checkpoint {path} is a directory; pass the .safetensors file")
    with contextlib.ExitStack() as stack:
        # Read on the CPU first so that a bad device is not mistaken for a bad file.
        with _reading(path):
            handle = stack.enter_context(safetensors.safe_open(str(path), framework="pt"))
            raw = dict(handle.metadata() or {})
        fields = _parse_metadata(path, raw, expected_task)
        with _reading(path):
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    target = torch.device(device)
    if target.type != "cpu":
        tensors = {name: tensor.to(target) for name, tensor in tensors.items()}
    return Checkpoint(path=path, tensors=tensors, **fields)


# --------------------------------------------------------------------- module helpers


def state_dict_to_tensors(module: nn.Module) -> dict[str, Tensor]:
    """The module's parameters and buffers as plain detached tensors, ready to save."""
    tensors: dict[str, Tensor] = {}
    for name, value in module.state_dict().items():
        if not isinstance(value, Tensor):
            raise JiioError(
                f"module state entry {name!r} is not a tensor; it cannot go in a checkpoint"
            )
        tensors[name] = value.detach()
    return tensors


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    more = len(names) - _MAX_NAMES
    return shown + (f" (+{more} more)" if more > 0 else "")


MODEL_PREFIX = "model."
"""Checkpoints written by training keep the model's state under this prefix (beside the
optimiser's ``optim.*`` entries)."""


def model_tensors(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The model's state dict within a checkpoint's tensors (the ``model.*`` entries,
    without the prefix)."""
    n = len(MODEL_PREFIX)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}


def load_module_state(module: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Load ``tensors`` into ``module``, requiring the exact same names and shapes.

    Raises:
        JiioError: naming the first missing, unexpected or mis-shaped entries, which
            means the checkpoint was saved for a different model configuration.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        raise JiioError(
            f"checkpoint does not match the model ({'; '.join(parts)}); "
            "it was saved for a different model configuration"
        )
    for name, current in expected.items():
        if tuple(tensors[name].shape) != tuple(current.shape):
            raise JiioError(
                f"checkpoint tensor {name!r} has shape {tuple(tensors[name].shape)} but the "
                f"model expects {tuple(current.shape)}; it was saved for a different model "
                "configuration"
            )
    try:
        module.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        raise JiioError(f"cannot load checkpoint into the model: {exc}") from exc
