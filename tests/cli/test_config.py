"""Parsing of budgets and devices, and the shared option models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from jiio_cli.config import (
    CommonConfig,
    load_config_file,
    parse_device,
    parse_eps,
    parse_eps_list,
)
from jiio_cli.errors import UsageError

# ------------------------------------------------------------------------- epsilon


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.3", 0.3),
        ("8/255", 8 / 255),
        ("1e-2", 0.01),
        (" 0.5 ", 0.5),
        ("0", 0.0),
        ("-0", 0.0),
        (".5", 0.5),
        ("2.5E+1/10", 2.5),
        ("8 / 255", 8 / 255),
    ],
)
def test_parse_eps_accepts_decimals_and_fractions(text: str, expected: float) -> None:
    assert parse_eps(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "8/0",
        "-0.1",
        "-8/255",
        "8/-255",
        "nan",
        "inf",
        "-inf",
        "",
        "   ",
        "abc",
        "1/2/3",
        "/3",
        "3/",
        "1e999",
        "1e308/1e-308",
        "0x10",
        "1_0",
        "٣",
        "0.3.1",
        "1e",
    ],
)
def test_parse_eps_rejects_malformed(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_eps(text)
    message = str(info.value)
    assert "\n" not in message
    assert "8/255" in message  # the message shows what is accepted


@given(st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False))
def test_parse_eps_round_trips_repr(value: float) -> None:
    assert parse_eps(repr(value)) == value


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=10**9))
def test_parse_eps_fraction_equals_division(p: int, q: int) -> None:
    assert parse_eps(f"{p}/{q}") == p / q


@given(st.floats(max_value=0.0, exclude_max=True, allow_nan=False))
def test_parse_eps_rejects_negative_floats(value: float) -> None:
    with pytest.raises(UsageError):
        parse_eps(repr(value))


_NUMERIC_CHARS = set("0123456789.eE+-/")


def _has_foreign_char(text: str) -> bool:
    return any(c not in _NUMERIC_CHARS and not c.isspace() for c in text)


@given(st.text().filter(_has_foreign_char))
def test_parse_eps_rejects_non_numeric_text(text: str) -> None:
    with pytest.raises(UsageError):
        parse_eps(text)


def test_parse_eps_list() -> None:
    assert parse_eps_list("0.1,0.2,8/255") == [0.1, 0.2, 8 / 255]
    assert parse_eps_list(" 0 , 1e-2 ") == [0.0, 0.01]
    for bad in ["", "0.1,,0.2", "0.1,", "0.1,abc"]:
        with pytest.raises(UsageError):
            parse_eps_list(bad)


# -------------------------------------------------------------------------- device


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_parse_device_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 0)
    assert parse_device("auto") == torch.device("cpu")
    assert parse_device("CPU") == torch.device("cpu")
    for name in ["cuda", "cuda:0", "cuda:99"]:
        with pytest.raises(UsageError, match="--device cpu"):
            parse_device(name)


def test_parse_device_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 2)
    assert parse_device("auto") == torch.device("cuda")
    assert parse_device("cuda") == torch.device("cuda")
    assert parse_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UsageError, match="2 CUDA devices"):
        parse_device("cuda:2")


@pytest.mark.parametrize("name", ["tpu", "cuda:", "cuda:-1", "cuda:x", "", "gpu"])
def test_parse_device_rejects_unknown(name: str) -> None:
    with pytest.raises(UsageError, match="auto, cpu, cuda or cuda:N"):
        parse_device(name)


# ------------------------------------------------------------------------- options


def test_common_options_resolve_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 0)
    options = CommonConfig()
    assert options.device == "cpu"
    assert options.torch_device == torch.device("cpu")
    assert options.seed == 0
    for bad in [{"seed": -1}, {"seed": 2**32}, {"device": "cuda:99"}, {"colour": True}]:
        with pytest.raises(ValidationError):
            CommonConfig(**bad)


def test_load_config_file_reads_json_toml_and_sections(tmp_path: Path) -> None:
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"memory": 7, "eps": "8/255"}))
    assert load_config_file(as_json) == {"memory": 7, "eps": "8/255"}
    as_toml = tmp_path / "run.toml"
    as_toml.write_text("epochs = 2\n\n[solver]\nmax_iter = 12\n")
    assert load_config_file(as_toml, section="solver") == {"max_iter": 12}
    assert load_config_file(as_toml, section="missing") == {}
    assert load_config_file(as_toml)["epochs"] == 2


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.json", "{not json"),
        ("list.json", "[1, 2]"),
        ("bad.toml", "x = "),
        ("conf.yaml", "a: 1"),
    ],
)
def test_load_config_file_refuses(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError) as info:
        load_config_file(path)
    assert "\n" not in str(info.value)


def test_load_config_file_missing_or_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_config_file(tmp_path / "absent.json")
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(UsageError, match="directory"):
        load_config_file(folder)
