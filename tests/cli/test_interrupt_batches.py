"""Ctrl-C in batched commands: ``jiio attack`` and ``jiio adapt --episodes`` print what the
finished batches measured, marked partial, and exit 130.

Each test starts the real command in a fresh interpreter, reads its progress lines on
stderr (not a terminal: one line per phase start and one every 0.2 s; or the bar, on a
pseudo-terminal) until one counts a finished batch, and sends SIGINT. The runs ask for
many small batches, so that the signal lands long before the end; each test checks that
premise (fewer batches done than asked).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from classifiers import save_classifier
from cli_processes import run_on_terminal, start_jiio, wait_for_line
from meta_models import save_tiny_meta_model

INTERVAL = {"JIIO_PROGRESS_INTERVAL": "0.2"}


def _interrupt(args: list[str], finished_batch: str) -> tuple[str, str]:
    """Run ``jiio ARGS``, send SIGINT once a stderr line matches ``finished_batch``; the
    run must exit 130 with one error line and no traceback. (stdout, stderr)"""
    proc = start_jiio(args, **INTERVAL)
    seen = wait_for_line(proc, finished_batch)
    proc.send_signal(signal.SIGINT)
    try:
        stdout, rest = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    stderr = "\n".join([*seen, rest])
    assert proc.returncode == 130, stderr
    assert stderr.rstrip().splitlines()[-1] == "error: interrupted"
    assert "Traceback" not in stderr
    return stdout, stderr


def _check_marker(partial: dict[str, int], noun: str, total: int, batch: int) -> int:
    """The JSON marker's counts agree with each other; the batches finished."""
    batches = -(-total // batch)
    done = partial["batches_done"]
    assert partial["batches"] == batches and partial[f"{noun}_requested"] == total
    assert 1 <= done < batches, "the signal must come after the first batch, before the end"
    assert partial[f"{noun}_done"] == min(done * batch, total)
    return done


# -- jiio attack: 400 images in batches of 4, a few JIIO iterations each.
ATTACK = [
    *("attack", "--eps", "0.1", "--max-images", "400", "--batch-size", "4"),
    *("--iterations", "6", "--memory", "4", "--device", "cpu"),
]
ATTACK_BATCH_DONE = r"^jiio \S+ 0\.1: [1-9]\d*/400"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("attack") / "clf.safetensors")


def test_ctrl_c_in_attack_reports_the_finished_images_as_json(
    classifier: Path, tmp_path: Path
) -> None:
    examples = tmp_path / "examples"
    args = [*ATTACK, "-c", str(classifier), "--save-examples", str(examples), "--examples", "3"]
    stdout, _ = _interrupt([*args, "--allow-unconverged", "--json"], ATTACK_BATCH_DONE)
    doc = json.loads(stdout)
    assert doc["complete"] is False
    done = _check_marker(doc["partial"], "images", 400, 4)
    # Every number is over the finished images, and only over them.
    assert doc["images"] == 4 * done
    assert [row["method"] for row in doc["rows"]] == ["jiio"]
    (per_image,) = doc["per_image"]
    assert len(per_image["broken_by"]) == len(per_image["eval_unconverged"]) == 4 * done
    # The examples of finished images, each whole; nothing half-written beside them.
    written = [Path(p) for p in doc["examples"]]
    assert len(written) == 1 + 3 and all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert sorted(p for p in examples.rglob("*") if p.is_file()) == sorted(written)


def test_ctrl_c_in_attack_prints_the_partial_table(classifier: Path) -> None:
    stdout, _ = _interrupt(
        [*ATTACK, "-c", str(classifier), "--allow-unconverged"], ATTACK_BATCH_DONE
    )
    marker = re.search(r"^partial: (\d+) of 100 batches, (\d+) images$", stdout, re.MULTILINE)
    assert marker, stdout
    done, images = int(marker[1]), int(marker[2])
    assert 1 <= done < 100 and images == 4 * done
    assert f"jiio attack ({images} images" in stdout


# -- jiio adapt --episodes: a tiny untrained meta-model, 3-way episodes in batches of 2.
ADAPT = [
    *("adapt", "--ways", "3", "--queries", "1", "--iterations", "6"),
    *("--device", "cpu", "--allow-unconverged"),
]


@pytest.fixture(scope="module")
def meta_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("adapt") / "meta.safetensors"
    save_tiny_meta_model(path)
    return path


def test_ctrl_c_in_adapt_episodes_reports_the_finished_episodes_as_json(
    meta_model: Path,
) -> None:
    args = [*ADAPT, "-c", str(meta_model), "--episodes", "80", "--batch-size", "2", "--json"]
    stdout, _ = _interrupt(args, r"^episodes \(across\): [1-9]\d*/80")
    doc = json.loads(stdout)
    assert doc["complete"] is False and doc["episode_kind"] == "across"
    done = _check_marker(doc["partial"], "episodes", 80, 2)
    assert doc["episodes"] == 2 * done
    for method in ("jiio", "naive", "centroid"):
        assert 0 <= doc[method]["accuracy"] <= 1
    assert len(doc["naive_steps"]) >= 1 and doc["readout_unconverged"] <= 2 * done


def test_ctrl_c_in_adapt_episodes_prints_the_partial_table(meta_model: Path) -> None:
    args = [*ADAPT, "-c", str(meta_model), "--episodes", "80", "--batch-size", "2"]
    stdout, _ = _interrupt(args, r"^episodes \(across\): [1-9]\d*/80")
    marker = re.search(r"^partial: (\d+) of 40 batches, (\d+) episodes$", stdout, re.MULTILINE)
    assert marker, stdout
    done, episodes = int(marker[1]), int(marker[2])
    assert 1 <= done < 40 and episodes == 2 * done
    assert f"jiio adapt: {episodes} episodes across alphabets" in stdout
    assert "JIIO minus, paired per episode" in stdout


def test_ctrl_c_in_the_second_kind_keeps_the_first_kinds_report(meta_model: Path) -> None:
    args = [*ADAPT, "-c", str(meta_model), "--episodes", "30", "--batch-size", "3"]
    args += ["--episode-kind", "both", "--json"]
    stdout, _ = _interrupt(args, r"^episodes \(within\): [1-9]\d*/30")
    doc = json.loads(stdout)
    across, within = doc["reports"]
    assert doc["complete"] is False
    assert across["complete"] is True and across["episodes"] == 30 and "partial" not in across
    assert within["complete"] is False and within["episode_kind"] == "within"
    assert within["episodes"] == 3 * _check_marker(within["partial"], "episodes", 30, 3)


def test_ctrl_c_in_sinusoid_tasks_reports_the_finished_tasks() -> None:
    args = ["adapt", "--dataset", "sinusoid", "--episodes", "2000", "--batch-size", "10"]
    stdout, _ = _interrupt([*args, "--device", "cpu", "--json"], r"^sinusoid tasks: [1-9]\d*/")
    doc = json.loads(stdout)
    assert doc["complete"] is False
    assert doc["episodes"] == 10 * _check_marker(doc["partial"], "episodes", 2000, 10)
    assert doc["jiio"]["mse"] >= 0 and doc["no_adaptation"]["mse"] >= 0


def test_ctrl_c_on_a_terminal_stops_the_bar_and_prints_the_partial_table(
    meta_model: Path,
) -> None:
    """As a person sees it: the bar on a pseudo-terminal, Ctrl-C once it counts a batch."""
    args = [*ADAPT, "-c", str(meta_model), "--episodes", "80", "--batch-size", "2"]
    code, screen = run_on_terminal(
        args, 180, interrupt_when=r"episodes \(across\).*\b[1-9]\d*/80\b"
    )
    assert code == 130, screen
    assert "ETA" in screen and "Traceback" not in screen
    marker = re.search(r"partial: (\d+) of 40 batches, (\d+) episodes", screen)
    assert marker and 1 <= int(marker[1]) < 40, screen
    assert f"jiio adapt: {marker[2]} episodes across alphabets" in screen
    assert screen.rstrip().endswith("error: interrupted")
