"""Ctrl-C during training leaves a loadable checkpoint and a clean exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jiio_cli.checkpoint import load_checkpoint


def test_sigint_during_training_saves_a_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng()
    np.savez(tmp_path / "data.npz", images=(rng.random((64, 12, 12)) * 255).astype(np.uint8))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-c",
        "from jiio_cli.cli.app import main; main()",
        "train",
        "--task",
        "generate",
        "--data",
        str(tmp_path / "data.npz"),
        "--image-size",
        "12",
        "--width",
        "8",
        "--latent-dim",
        "4",
        "--epochs",
        "1000",
        "--batch-size",
        "8",
        "--inner-iters",
        "4",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = out / "generate-last.safetensors"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1
    ckpt = load_checkpoint(last, expected_task="generate")
    assert ckpt.step > 0
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*"))
