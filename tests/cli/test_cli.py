"""The command line: help, version, honest stubs, and the error boundary."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from jiio_cli import __version__
from jiio_cli.cli.app import app
from jiio_cli.cli.boundary import run_command
from jiio_cli.cli.output import emit, print_json
from jiio_cli.errors import JiioError, UsageError

COMMANDS = {
    "train": "training",
    "reconstruct": "reconstruction",
    "attack": "adversarial",
    "adapt": "adaptation",
    "bench": "benchmark",
    "sample": "sampling",
}

runner = CliRunner(env={"NO_COLOR": "1"})


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"jiio {__version__}")
    assert torch.__version__ in result.stdout


UNBUILT = []


@pytest.mark.parametrize(("args", "task"), UNBUILT)
def test_unbuilt_commands_fail_honestly(args: list[str], task: str) -> None:
    command = args[0]
    result = runner.invoke(app, [*args, "--device", "cpu", "--seed", "7", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""  # no pretend result, not even with --json
    expected = f"error: jiio {command}: the {task} task is not built yet in this version\n"
    assert result.stderr == expected


def test_bad_device_is_a_usage_error() -> None:
    result = runner.invoke(app, ["attack", "--device", "cuda:99"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: device 'cuda:99'")
    assert "Traceback" not in result.output


def test_negative_seed_is_a_usage_error() -> None:
    result = runner.invoke(app, ["train", "--seed", "-1"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "--seed -1" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["attack", "--eps", "8/0"], "error: epsilon '8/0' divides by zero"),
        (["attack", "--norm", "l3"], "error: Invalid value for '--norm'"),
        (["atack"], "error: No such command 'atack'"),
    ],
)
def test_real_process(args: list[str], message: str) -> None:
    """Through the console entry point: our errors and Click's are one line, exit 2."""
    env = {**os.environ, "NO_COLOR": "1"}
    code = "from jiio_cli.cli.app import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1


# ------------------------------------------------------------------ error boundary


def _exit_code(body: Callable[[], object], *, debug: bool = False) -> int:
    with pytest.raises(typer.Exit) as info:
        run_command(body, debug=debug)
    return info.value.exit_code


def _raise(exc: BaseException) -> Callable[[], object]:
    def body() -> object:
        raise exc

    return body


class _Config(BaseModel):
    seed: int = Field(ge=0)


@pytest.mark.parametrize(
    ("exc", "code", "fragment"),
    [
        (JiioError("file broken; fix it"), 1, "error: file broken; fix it"),
        (UsageError("bad flag; use another"), 2, "error: bad flag; use another"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), 1, "--batch-size"),
        (ValueError("boom\nsecond line"), 1, "internal error (ValueError: boom second line)"),
    ],
)
def test_boundary_maps_exceptions(
    capsys: pytest.CaptureFixture[str], exc: BaseException, code: int, fragment: str
) -> None:
    assert _exit_code(_raise(exc)) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert fragment in captured.err
    assert "Traceback" not in captured.err


def test_boundary_maps_validation_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(lambda: _Config(seed=-3)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid --seed -3")
    assert err.count("\n") == 1


def test_boundary_shows_traceback_only_with_debug(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(_raise(RuntimeError("kaput")), debug=True) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith("error: internal error (RuntimeError: kaput)")


def test_boundary_returns_the_result() -> None:
    assert run_command(lambda: 42) == 42


# -------------------------------------------------------------------------- output


def test_json_output_is_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    emit(
        {"eps": 8 / 255, "loss": float("nan"), "x": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)},
        json_output=True,
    )
    document = json.loads(capsys.readouterr().out)
    assert document == {"eps": 8 / 255, "loss": None, "x": [1.0, 2.0], "n": 3}


def test_print_json_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        print_json({"f": object()})


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    emit([{"eps": 0.1, "accuracy": 0.5}, {"eps": 0.2, "accuracy": 0.25}], json_output=False)
    out = capsys.readouterr().out
    assert "accuracy" in out and "0.25" in out
    assert "\x1b[" not in out  # no colour codes when not on a terminal


def test_table_is_not_cropped_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    # Wider than 80 columns: rich's width for a file or pipe, which used to cut it off.
    row = {f"column_{i}": f"value_{i}_{'x' * 8}" for i in range(8)}
    emit([row], json_output=False, title="a wide table")
    out = capsys.readouterr().out
    assert all(key in out and value in out for key, value in row.items())
    assert "…" not in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sigma", "abc"], "--sigma"),
        (["--sigma", "0.3:0.1"], "--sigma"),
        (["--task", "denoise", "--sigma", "0"], "noise level"),
        (["--task", "inpaint", "--hole-size", "0"], "--hole-size"),
        (["--data", "no/such/folder"], "does not exist"),
        (["--width", "12"], "multiple of 8"),
        (["--state-resolution", "quarter"], "--state-resolution"),
        (["--augment", "rotate:3"], "--augment"),
        (["--augment", "shift:0"], "--augment"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_train_rejects_bad_options_in_one_line(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["train", *args, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and needle in result.stderr
    assert "Traceback" not in result.output


def test_every_train_option_belongs_to_a_task() -> None:
    """An option's help panel is its scope: a task panel, the Run panel (every task, the
    names that --dataset sinusoid also reads being COMMON_OPTIONS) or the shared ones."""
    import typer.main

    from jiio_cli.cli.commands.train import train
    from jiio_cli.cli.commands.train_options import COMMON_OPTIONS, PANEL_TASKS, RUN

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    panels = {p.name: getattr(p, "rich_help_panel", None) for p in command.params}
    assert set(panels) == set(inspect.signature(train).parameters) - {"ctx"}
    shared = {name for name, panel in panels.items() if panel is None}
    assert shared == {"config", "device", "seed", "json_output", "debug"}
    run = {name for name, panel in panels.items() if panel == RUN}
    assert (run | shared) - {"data", "image_size"} == COMMON_OPTIONS
    assert all(panel in PANEL_TASKS for name, panel in panels.items() if name not in run | shared)
    assert {task for tasks in PANEL_TASKS.values() for task in tasks} == {
        "generate", "denoise", "inpaint", "adversarial", "meta"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--task", "adversarial", "--latent-dim", "8"],
            "--latent-dim does not apply to --task adversarial "
            "(it is for --task generate, denoise, inpaint)",
        ),
        (["--task", "meta", "--batch-size", "4"], "--batch-size does not apply to --task meta"),
        (
            ["--task", "inpaint", "--ways", "5"],
            "--ways does not apply to --task inpaint (it is for --task meta)",
        ),
        (["--task", "denoise", "--eps", "8/255"], "(it is for --task adversarial)"),
        (["--task", "adversarial", "--augment", "shift:1"], "--augment does not apply"),
        (["--task", "meta", "--resume", "--channels", "3"], "--channels does not apply"),
    ],
)
def test_train_rejects_options_of_another_task(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["train", *args, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and needle in result.stderr


@pytest.mark.parametrize("command", ["train", "bench"])
def test_help_of_the_task_commands_fits_two_screens(command: str) -> None:
    wide = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "100", "TERMINAL_WIDTH": "100"})
    result = wide.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert len(lines) <= 100, f"{command} --help has {len(lines)} lines"


def test_old_option_names_reach_the_new_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """--inner-iters and --context-step still work (as --iterations and --alpha-x);
    giving both spellings of one option is refused."""
    from jiio_cli.cli.commands import train_meta

    seen: list[train_meta.MetaTrainCommandConfig] = []
    monkeypatch.setattr(train_meta, "run", lambda opts, *_: seen.append(opts))
    args = ["train", "--task", "meta", "--inner-iters", "7", "--context-step", "0.4"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (seen[0].inner_iters, seen[0].context_step) == (7, 0.4)
    both = runner.invoke(app, [*args, "--iterations", "5", "--device", "cpu"])
    assert both.exit_code == 2 and both.stderr.count("\n") == 1
    assert "--inner-iters is the old name of --iterations" in both.stderr
