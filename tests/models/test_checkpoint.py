"""Checkpoint files: round trip, atomic writes, and refusal of bad files."""

from __future__ import annotations

import errno
import os
import pickle
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

from jiio_cli import __version__
from jiio_cli.checkpoint import (
    FORMAT,
    Checkpoint,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    state_dict_to_tensors,
)
from jiio_cli.errors import JiioError, UsageError


def _save(path: Path, *, step: int = 3, task: str = "adversarial", **kwargs: Any) -> Path:
    tensors = kwargs.pop("tensors", {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)})
    return save_checkpoint(
        path,
        tensors,
        task=task,
        model_kind="mlp",
        model_config={"hidden": 8, "layers": [1, 2]},
        step=step,
        metrics={"accuracy": 0.75, "loss": float("nan")},
        **kwargs,
    )


def _refusal(path: Path, **kwargs: Any) -> str:
    """Load ``path`` expecting a refusal; return its message after checking it is one line."""
    with pytest.raises(JiioError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return _save(tmp_path / "model.safetensors")


# ---------------------------------------------------------------------- round trip


def test_round_trip_with_metadata(tmp_path: Path) -> None:
    weight = torch.randn(4, 3, requires_grad=True)
    tensors = {
        "weight": weight,
        "transposed": weight.detach().t(),  # not contiguous, shares storage with weight
        "tied": weight,
        "half": torch.ones(2, dtype=torch.float16),
    }
    path = _save(
        tmp_path / "sub" / "model.safetensors",
        tensors=tensors,
        training_config={"lr": 0.1},
        extra={"note": "hello"},
    )
    loaded = load_checkpoint(path, expected_task={"adversarial", "generative"})
    assert isinstance(loaded, Checkpoint)
    assert loaded.path == path
    assert set(loaded.tensors) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded.tensors[name], tensor.detach())
        assert loaded.tensors[name].dtype == tensor.dtype
    assert (loaded.task, loaded.model_kind, loaded.step) == ("adversarial", "mlp", 3)
    assert loaded.model_config == {"hidden": 8, "layers": [1, 2]}
    assert loaded.training_config == {"lr": 0.1}
    assert loaded.metrics == {"accuracy": 0.75, "loss": None}  # NaN is stored as null
    assert loaded.format_version == 1
    assert loaded.jiio_version == __version__
    assert loaded.torch_version == torch.__version__
    assert loaded.created is not None
    assert datetime.fromisoformat(loaded.created).utcoffset() is not None
    assert loaded.extra == {"note": "hello"}


def test_raw_metadata_is_all_strings(checkpoint: Path) -> None:
    with safetensors.safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == FORMAT
    assert metadata["format_version"] == "1"
    assert metadata["training_config"] == "null"
    assert metadata["step"] == "3"


def test_reserved_extra_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        _save(tmp_path / "m.safetensors", extra={"task": "other"})


# --------------------------------------------------------------------- atomic write


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_leaves_no_temp_file(tmp_path: Path) -> None:
    _save(tmp_path / "model.safetensors")
    _save(tmp_path / "model.safetensors", step=4)  # overwrite
    assert _entries(tmp_path) == ["model.safetensors"]
    assert load_checkpoint(tmp_path / "model.safetensors").step == 4


def _partial_write_then(error: BaseException) -> Any:
    def failing_save(tensors: Any, metadata: Any = None) -> bytes:
        raise error

    return failing_save


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), JiioError),
        (RuntimeError("writer crashed"), RuntimeError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
)
def test_failed_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, expected: type
) -> None:
    path = _save(tmp_path / "model.safetensors", step=1)
    before = path.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save", _partial_write_then(error))
    with pytest.raises(expected) as info:
        _save(path, step=2)
    if expected is JiioError:
        assert "no space left" in str(info.value).lower()
        assert "\n" not in str(info.value)
    assert _entries(tmp_path) == ["model.safetensors"]
    assert path.read_bytes() == before
    assert load_checkpoint(path).step == 1


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safetensors.torch, "save", _partial_write_then(OSError("boom")))
    with pytest.raises(JiioError):
        _save(tmp_path / "model.safetensors")
    assert _entries(tmp_path) == []


def test_save_to_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"):
        _save(tmp_path)


# ---------------------------------------------------------------------- refusals


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(UsageError, match="directory"):
        load_checkpoint(tmp_path)


def _header(data: bytes) -> tuple[int, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return length, data[8 : 8 + length]


def _damaged_variants(data: bytes) -> dict[str, bytes]:
    length, header = _header(data)
    body = data[8 + length :]
    return {
        "truncated": data[:-3],
        "header only": data[: 8 + length],
        "too short": data[:5],
        "empty": b"",
        "random bytes": bytes(range(256)) * 4,
        "bad offsets": data[:8]
        + header.replace(b'"data_offsets":[0,', b'"data_offsets":[4,')
        + body,
        "bad json": data[:8] + header[:-2] + b"}}" + body,
        "bad length": struct.pack("<Q", length + 2) + data[8:],
        "bad dtype": data[:8] + header.replace(b'"F32"', b'"F64"', 1) + body,
    }


@pytest.mark.parametrize(
    "variant",
    [
        "truncated",
        "header only",
        "too short",
        "empty",
        "random bytes",
        "bad offsets",
        "bad json",
        "bad length",
        "bad dtype",
    ],
)
def test_damaged_files_are_refused(checkpoint: Path, tmp_path: Path, variant: str) -> None:
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(_damaged_variants(checkpoint.read_bytes())[variant])
    assert "damaged or not a safetensors file" in _refusal(damaged)


def test_pickle_files_are_refused_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*_: Any, **__: Any) -> None:
        raise AssertionError("loading must never unpickle")

    pickled = tmp_path / "plain.pkl"
    pickled.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    torch_saved = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, torch_saved)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    for path in (pickled, torch_saved):
        _refusal(path)


def _write_raw(path: Path, metadata: dict[str, str] | None) -> Path:
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    return path


def _valid_metadata(**changes: str) -> dict[str, str]:
    metadata = {
        "format": FORMAT,
        "format_version": "1",
        "task": "adversarial",
        "model_kind": "mlp",
        "model_config": "{}",
    }
    metadata.update(changes)
    return metadata


def test_minimal_metadata_loads(tmp_path: Path) -> None:
    loaded = load_checkpoint(_write_raw(tmp_path / "m.safetensors", _valid_metadata()))
    assert (loaded.step, loaded.metrics, loaded.training_config) == (0, {}, None)


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        (None, "not a jiio checkpoint"),
        ({"format": "pt"}, "not a jiio checkpoint"),
        (_valid_metadata(format="other-format"), "'other-format'"),
        (_valid_metadata(format_version="2"), "upgrade jiio"),
        (_valid_metadata(format_version="one"), "format_version"),
        (_valid_metadata(model_config="{not json"), "model_config"),
        (_valid_metadata(model_config="[1]"), "model_config"),
        (_valid_metadata(metrics="nan?"), "metrics"),
        (_valid_metadata(step="-1"), "step"),
        (_valid_metadata(task=""), "task"),
    ],
)
def test_bad_metadata_is_refused(
    tmp_path: Path, metadata: dict[str, str] | None, fragment: str
) -> None:
    path = _write_raw(tmp_path / "m.safetensors", metadata)
    assert fragment in _refusal(path)


def test_wrong_task_names_both_tasks(checkpoint: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_checkpoint(checkpoint, expected_task="generative")
    message = str(info.value)
    assert "'adversarial'" in message and "'generative'" in message
    assert "\n" not in message


# ------------------------------------------------------------------ module helpers


def test_module_state_round_trip(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    path = _save(tmp_path / "m.safetensors", tensors=state_dict_to_tensors(source))
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    load_module_state(target, load_checkpoint(path).tensors)
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value)


def test_module_state_mismatch_is_explained() -> None:
    tensors = state_dict_to_tensors(nn.Linear(3, 4))
    with pytest.raises(JiioError, match=r"'weight' has shape \(4, 3\).*\(5, 3\)"):
        load_module_state(nn.Linear(3, 5), tensors)
    with pytest.raises(JiioError, match="missing bias"):
        load_module_state(nn.Linear(3, 4), {"weight": tensors["weight"]})
    with pytest.raises(JiioError, match="unexpected extra"):
        load_module_state(nn.Linear(3, 4), {**tensors, "extra": torch.ones(1)})


def test_file_mode_follows_umask(tmp_path: Path) -> None:
    # The atomic write must not leave the checkpoint readable by its owner only.
    umask = os.umask(0o022)
    try:
        path = _save(tmp_path / "m.safetensors")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
