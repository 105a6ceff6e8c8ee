"""The progress facility's words, and the one rule for unconverged solves."""

from __future__ import annotations

import time

import pytest

from jiio_cli.cli.progress import (
    INTERVAL_ENV,
    format_duration,
    progress_display,
    resume_command,
    training_progress,
)
from jiio_cli.cli.unconverged import enforce_converged, name_items
from jiio_cli.errors import JiioError


def test_durations_read_as_a_person_says_them() -> None:
    assert format_duration(0.25) == "0.2 s"
    assert format_duration(42.4) == "42 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(710 * 18.2) == "3 h 35 min"
    assert format_duration(float("nan")) == "unknown"


def test_the_resume_command_repeats_the_arguments_once() -> None:
    assert resume_command(["train", "--out", "my run"]) == "jiio train --out 'my run' --resume"
    assert resume_command(["train", "--resume"]) == "jiio train --resume"


def test_plain_lines_come_at_the_interval_with_count_and_time_left(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "0.05")
    with progress_display() as progress:
        progress.update("solve", 0, 4)
        time.sleep(0.02)
        progress.update("solve", 2, 4, "obj 1.5")
        time.sleep(0.3)  # several intervals: several lines, all of the current state
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("solve: 0/4 (0%), ")
    later = [line for line in lines[1:] if line.startswith("solve: 2/4 (50%), ")]
    assert len(later) >= 2, lines
    assert all("elapsed" in line and "left" in line and line.endswith("obj 1.5") for line in later)


def test_training_events_become_the_plan_the_estimate_and_the_resume_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "60")
    monkeypatch.setattr("sys.argv", ["jiio", "train", "--task", "inpaint"])
    plan = {
        "event": "plan",
        "task": "inpaint",
        "train_size": 4500,
        "epochs": 10,
        "batches": 71,
        "batch_size": 64,
        "steps": 710,
        "done": 0,
        "device": "cpu",
        "save_every": 0,
        "checkpoint": "runs/inpaint/inpaint-last.safetensors",
        "best": "runs/inpaint/inpaint-best.safetensors",
    }
    with training_progress(10, enabled=False) as progress:
        progress(plan)
        for step in range(1, 5):
            progress(
                {"event": "step", "epoch": 0, "batch": step, "batches": 71, "step": step}
                | {"steps": 710, "loss": 0.5}
            )
        progress(
            {"event": "interrupted", "step": 4, "steps": 710, "checkpoint": plan["checkpoint"]}
        )
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "training inpaint on 4500 samples: 710 steps (10 epochs of 71 batches of 64) on cpu"
    )
    assert err[1].startswith("checkpoints: runs/inpaint/inpaint-last.safetensors (every epoch)")
    assert any(line.startswith("estimated time for the 706 steps left: ") for line in err)
    assert err[-2] == (
        "interrupted at step 4 of 710; checkpoint saved: runs/inpaint/inpaint-last.safetensors"
    )
    assert err[-1] == "resume with: jiio train --task inpaint --resume"


def test_unconverged_solves_fail_unless_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    enforce_converged([], allow=False, fix="raise --iterations")  # nothing to say
    assert capsys.readouterr().err == ""
    with pytest.raises(JiioError) as failure:
        enforce_converged(["a.png (not converged)"], allow=False, fix="raise --iterations")
    assert failure.value.exit_code == 1
    assert "a.png (not converged)" in failure.value.message
    assert "raise --iterations" in failure.value.message
    assert "--allow-unconverged" in failure.value.message
    enforce_converged(["a.png (not converged)"], allow=True, fix="raise --iterations")
    warning = capsys.readouterr().err
    assert warning.startswith("warning: ") and "a.png" in warning and warning.count("\n") == 1


def test_long_lists_are_shortened() -> None:
    assert name_items(["a", "b"]) == "a, b"
    assert name_items([str(i) for i in range(8)]) == "0, 1, 2, 3, 4 and 3 more"
