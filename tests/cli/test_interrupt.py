"""Ctrl-C during training leaves a loadable checkpoint and a clean exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jiio_cli.checkpoint import load_checkpoint


@pytest.mark.slow
def test_sigint_during_training_saves_a_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    np.savez(tmp_path / "data.npz", images=(rng.random((64, 12, 12)) * 255).astype(np.uint8))
    out = tmp_path / "run"
    cmd = _small_train_command(tmp_path / "data.npz", out, 1000, "--task", "generate")
    # A shell without job control starts background jobs with SIGINT ignored, and the
    # child would inherit that; give it the default disposition, as a terminal would.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = out / "generate-last.safetensors"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=180)  # a loaded machine can be slow to save
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    # The run says where its work went and how to continue it, then the one error line.
    assert lines[-1] == "error: interrupted"
    assert f"checkpoint saved: {last}" in lines[-3]
    assert lines[-2].startswith("resume with: jiio train --task generate")
    assert lines[-2].endswith(f"--out {out} --device cpu --resume")
    ckpt = load_checkpoint(last, expected_task="generate")
    assert ckpt.step > 0
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))


def _small_train_command(data: Path, out: Path, epochs: int, *task_args: str) -> list[str]:
    """``jiio train`` in a fresh interpreter: ``task_args``, then a tiny decoder (width 8,
    latent 4) on the 12×12 images ``data``, batches of 8, 4 inner iterations, CPU."""
    return [
        sys.executable,
        "-c",
        "from jiio_cli.cli.app import main; main()",
        "train",
        *task_args,
        "--data",
        str(data),
        "--image-size",
        "12",
        "--width",
        "8",
        "--latent-dim",
        "4",
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--inner-iters",
        "4",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    denoise = ("--task", "denoise", "--sigma", "0.1")
    return [*_small_train_command(data, out, 3, *denoise), "--seed", "3", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    data = tmp_path / "data.npz"
    np.savez(data, images=(rng.random((48, 12, 12)) * 255).astype(np.uint8))
    whole = subprocess.run(_train_cmd(data, tmp_path / "whole"), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(data, out, "--save-every", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = out / "denoise-last.safetensors"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if last.exists() and load_checkpoint(last).step >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = load_checkpoint(last).step
    assert saved < 18, "the run must be cut before its end"
    resumed = subprocess.run(
        _train_cmd(data, out, "--save-every", "2", "--resume"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(tmp_path / "whole" / "denoise-last.safetensors").tensors
    b = load_checkpoint(last).tensors
    model_keys = [k for k in a if k.startswith("model.")]
    assert model_keys
    for key in model_keys:
        assert torch.equal(a[key], b[key]), key
