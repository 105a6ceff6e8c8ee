"""Random bytes and truncated files as images and checkpoints: one line, right exit code."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cli_runs import reconstruct_on_cpu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from jiio_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DIGIT = ROOT / "sample_data" / "digits" / "digit_1.png"
MODEL = ROOT / "models" / "mnist-decoder.safetensors"
runner = CliRunner(env={"NO_COLOR": "1"})


def _one_clean_line(result: Result) -> None:
    assert result.exit_code in (1, 2), result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def _truncated_or_random(source: Path, blob: bytes | int) -> bytes:
    """``source`` cut to its first ``blob`` bytes, or the random bytes ``blob`` themselves."""
    return source.read_bytes()[:blob] if isinstance(blob, int) else blob


@contextlib.contextmanager
def _file_holding(data: bytes, name: str) -> Iterator[Path]:
    """A temporary file ``name`` (its folders made) holding ``data``; removed afterwards.
    Hypothesis reruns the test body, so pytest's per-test ``tmp_path`` would be shared."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        yield path


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), st.integers(0, 400)))
def test_random_or_truncated_images(blob: bytes | int) -> None:
    with _file_holding(_truncated_or_random(DIGIT, blob), "input.png") as path:
        result = reconstruct_on_cpu(str(path), "--allow-unconverged", iterations=3)
        if result.exit_code != 0:  # a truncation can still leave a readable PNG
            _one_clean_line(result)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=4000), st.integers(0, 4000)))
def test_random_or_truncated_checkpoints(blob: bytes | int) -> None:
    with _file_holding(_truncated_or_random(MODEL, blob), "model.safetensors") as path:
        out = path.with_name("o.png")
        _one_clean_line(
            reconstruct_on_cpu(str(DIGIT), "--checkpoint", str(path), "--out", str(out))
        )
        assert not out.exists()


CLASSIFIER = ROOT / "models" / "mnist-classifier.safetensors"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=4000), st.integers(0, 4000)))
def test_random_or_truncated_classifier_checkpoints(blob: bytes | int) -> None:
    with _file_holding(_truncated_or_random(CLASSIFIER, blob), "classifier.safetensors") as path:
        examples = path.with_name("examples")
        result = runner.invoke(
            app,
            [
                *("attack", "--checkpoint", str(path), "--max-images", "2"),
                *("--save-examples", str(examples), "--device", "cpu"),
            ],
        )
        _one_clean_line(result)
        assert not examples.exists()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_as_labelled_images(blob: bytes) -> None:
    with _file_holding(blob, "data/class_0/x.png") as path:
        data = path.parent.parent
        _one_clean_line(runner.invoke(app, ["attack", "--data", str(data), "--device", "cpu"]))
