"""Long commands as a person sees them: a bar on a terminal, lines in a log, Ctrl-C handled.

The terminal tests run the command on a real pseudo-terminal (``pty``), so rich decides
by itself that it is talking to a person; the others read stderr through a pipe, as a
batch job or ``2> log`` would.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from cli_processes import run_on_terminal, start_jiio, wait_for_line


def _tiny_data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, images=(rng.random((40, 12, 12)) * 255).astype(np.uint8))
    return data


def _train_args(data: Path, out: Path, epochs: int) -> list[str]:
    return [
        *("train", "--task", "denoise", "--sigma", "0.1", "--data", str(data)),
        *("--image-size", "12", "--width", "8", "--latent-dim", "4", "--inner-iters", "3"),
        *("--epochs", str(epochs), "--batch-size", "8", "--out", str(out), "--device", "cpu"),
    ]


@pytest.mark.slow
def test_training_on_a_terminal_shows_a_bar_with_count_and_eta(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    code, screen = run_on_terminal(_train_args(data, tmp_path / "run", epochs=1))
    assert code == 0, screen
    # The plan before the first step, with where the checkpoints go.
    assert "training denoise on 36 samples: 5 steps (1 epochs of 5 batches of 8)" in screen
    assert str(tmp_path / "run" / "denoise-last.safetensors") in screen
    # The bar: its label, a count of steps and an estimate of the time left.
    assert re.search(r"train .*\b[1-5]/5\b", screen), screen
    assert "ETA" in screen
    assert "estimated time for the" in screen


@pytest.mark.slow
def test_without_a_terminal_progress_is_a_line_every_interval(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    args = [*_train_args(data, tmp_path / "run", epochs=2), "--json"]
    proc = start_jiio(args, JIIO_PROGRESS_INTERVAL="0.2")
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    lines = stderr.splitlines()
    progress = [line for line in lines if re.match(r"train: \d+/10 \(\d+%\), ", line)]
    # The first at the first step, then one per interval: more than one for a run this long.
    assert len(progress) >= 2, stderr
    assert all("elapsed" in line for line in progress)
    assert any("left" in line for line in progress[1:]), progress
    json.loads(stdout)  # --json keeps stdout to its one document
    assert "\x1b[" not in stderr


def test_sigterm_during_training_prints_the_checkpoint_and_the_resume_command(
    tmp_path: Path,
) -> None:
    data = _tiny_data(tmp_path)
    out = tmp_path / "run"
    proc = start_jiio(_train_args(data, out, epochs=200), JIIO_PROGRESS_INTERVAL="0.2")
    wait_for_line(proc, r"^train: [1-9]\d*/")
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    lines = rest.splitlines()
    assert lines[-1] == "error: interrupted" and "Traceback" not in rest
    last = out / "denoise-last.safetensors"
    assert any(f"checkpoint saved: {last}" in line for line in lines), rest
    resume = next(line for line in lines if line.startswith("resume with: "))
    assert resume.endswith(f"--out {out} --device cpu --resume")
    assert last.exists()


@pytest.mark.parametrize("json_output", [False, True])
@pytest.mark.slow
def test_ctrl_c_in_the_engine_bench_prints_the_rows_measured_so_far(json_output: bool) -> None:
    sizes = ",".join(["2x8x8"] * 6)  # 12 rows: far more than finish before the signal
    args = ["bench", "--task", "engine", "--sizes", sizes, "--device", "cpu"]
    proc = start_jiio([*args, *(["--json"] if json_output else [])], JIIO_PROGRESS_INTERVAL="0.2")
    wait_for_line(proc, r"^engine timings: [1-9]\d*/12")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "error: interrupted" and "Traceback" not in stderr
    if json_output:
        doc = json.loads(stdout)
        assert doc["complete"] is False and 1 <= len(doc["rows"]) < 12
        assert all(row["batch"] == 2 for row in doc["rows"])
    else:
        assert re.search(r"interrupted: ([1-9]|1[01]) of 12 rows", stdout), stdout
        assert "iter/(f+vjp)" in stdout
