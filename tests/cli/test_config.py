"""Parsing of budgets and devices, and the shared option models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from jiio_cli.config import (
    CommonOptions,
    SolverOptions,
    load_config_file,
    load_options,
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
    options = CommonOptions()
    assert options.device == "cpu"
    assert options.torch_device == torch.device("cpu")
    assert options.seed == 0
    for bad in [{"seed": -1}, {"seed": 2**32}, {"device": "cuda:99"}, {"colour": True}]:
        with pytest.raises(ValidationError):
            CommonOptions(**bad)


def test_solver_options_ranges() -> None:
    defaults = SolverOptions()
    assert defaults.method == "anderson"
    assert SolverOptions(alpha_z=1.0, alpha_mu=1.0, method="picard").method == "picard"
    bad_values = [
        {"method": "newton"},
        {"memory": 0},
        {"memory": 101},
        {"tol": 0},
        {"tol": math.inf},
        {"max_iter": 0},
        {"check_every": 0},
        {"alpha_z": 0},
        {"alpha_z": 1.5},
        {"alpha_mu": 0},
        {"alpha_x": 0},
        {"alpha_x_final": 0},
        {"lam": -1},
        {"unknown": 1},
    ]
    for bad in bad_values:
        with pytest.raises(ValidationError):
            SolverOptions(**bad)


def test_load_options_file_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "solver.json"
    config.write_text(json.dumps({"memory": 7, "tol": 1e-3, "method": "picard"}))
    options = load_options(SolverOptions, config, {"tol": 1e-5, "memory": None})
    assert (options.memory, options.tol, options.method) == (7, 1e-5, "picard")


def test_load_options_toml_section(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[solver]\nmax_iter = 12\n\n[other]\nx = 1\n")
    assert load_options(SolverOptions, config, section="solver").max_iter == 12
    assert load_options(SolverOptions, config, section="missing") == SolverOptions()


def test_load_options_rejects_unknown_keys(tmp_path: Path) -> None:
    config = tmp_path / "solver.json"
    config.write_text(json.dumps({"memroy": 7}))
    with pytest.raises(ValidationError):
        load_options(SolverOptions, config)


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
