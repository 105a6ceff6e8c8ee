"""Random bytes and truncated files as images and checkpoints: one line, right exit code."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from jiio_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DIGIT = ROOT / "sample_data" / "digits" / "digit_1.png"
MODEL = ROOT / "models" / "mnist-decoder.safetensors"
runner = CliRunner(env={"NO_COLOR": "1"})


def _one_clean_line(result) -> None:
    assert result.exit_code in (1, 2), result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), st.integers(0, 400)))
def test_random_or_truncated_images(blob) -> None:
    data = DIGIT.read_bytes()[:blob] if isinstance(blob, int) else blob
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.png"
        path.write_bytes(data)
        result = runner.invoke(
            app,
            [
                "reconstruct",
                str(path),
                "--device",
                "cpu",
                "--iterations",
                "3",
                "--allow-unconverged",
            ],
        )
        if result.exit_code != 0:  # a truncation can still leave a readable PNG
            _one_clean_line(result)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=4000), st.integers(0, 4000)))
def test_random_or_truncated_checkpoints(blob) -> None:
    data = MODEL.read_bytes()[:blob] if isinstance(blob, int) else blob
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(data)
        result = runner.invoke(
            app,
            [
                "reconstruct",
                str(DIGIT),
                "--checkpoint",
                str(path),
                "--device",
                "cpu",
                "--out",
                str(Path(tmp) / "o.png"),
            ],
        )
        _one_clean_line(result)
        assert not (Path(tmp) / "o.png").exists()


CLASSIFIER = ROOT / "models" / "mnist-classifier.safetensors"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=4000), st.integers(0, 4000)))
def test_random_or_truncated_classifier_checkpoints(blob) -> None:
    data = CLASSIFIER.read_bytes()[:blob] if isinstance(blob, int) else blob
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classifier.safetensors"
        path.write_bytes(data)
        examples = Path(tmp) / "examples"
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
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data" / "class_0"
        folder.mkdir(parents=True)
        (folder / "x.png").write_bytes(blob)
        result = runner.invoke(
            app, ["attack", "--data", str(Path(tmp) / "data"), "--device", "cpu"]
        )
        _one_clean_line(result)
