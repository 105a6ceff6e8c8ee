"""Progress of long work on stderr: one facility for every command.

On a terminal, each phase of the work (a label such as ``naive (Adam, full solves)`` or
``train``) gets a rich bar with its count, the elapsed time and an estimate of the time
left. When stderr is not a terminal (a pipe, a log file, a batch job), the same state is
written as one plain line when a phase starts and then at least every
:data:`DEFAULT_INTERVAL` seconds (``JIIO_PROGRESS_INTERVAL`` overrides it), from a
background thread, so that a single step longer than the interval still leaves a trace.
Stdout is never touched: ``--json`` keeps it to its one document.

Tasks and the engine never print: they report through callbacks, ``update(label, done,
total)`` or the training loop's event dictionaries, which the context managers here
turn into bars and lines.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "INTERVAL_ENV",
    "ProgressDisplay",
    "batch_progress",
    "format_duration",
    "progress_display",
    "resume_command",
    "training_progress",
]

DEFAULT_INTERVAL = 10.0
"""Seconds between two plain progress lines when stderr is not a terminal."""

INTERVAL_ENV = "JIIO_PROGRESS_INTERVAL"
"""Environment variable that overrides :data:`DEFAULT_INTERVAL` (seconds, > 0)."""

# How many training steps after the first (which pays one-off costs) the estimate of the
# total training time is measured over.
_ESTIMATE_STEPS = 3

# (event key, label, format) of the numbers a training bar shows when a task reports them.
_STEP_FIELDS = (
    ("objective", "obj", ".4g"),
    ("residual", "res", ".2g"),
    ("eps", "eps", ".3g"),
    ("adv_accuracy", "adv acc", ".3f"),
)
_EPOCH_FIELDS = (
    ("heldout_psnr", "held-out PSNR (dB)", ".2f"),
    ("heldout_clean_accuracy", "held-out clean acc", ".3f"),
    ("heldout_robust_accuracy", "robust acc", ".3f"),
    ("val_mse", "val MSE", ".4f"),
)


def _interval() -> float:
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value > 0 else DEFAULT_INTERVAL


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``3 h 36 min``: a duration as a person reads it."""
    if not math.isfinite(seconds) or seconds < 0:
        return "unknown"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues this run: the same arguments plus ``--resume``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["jiio", *args])


@dataclass
class _Phase:
    """Where one labelled phase of the work stands."""

    label: str
    done: int
    total: int | None
    info: str
    started: float
    first_done: int
    first_at: float

    def line(self, now: float) -> str:
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        parts = [f"{self.label}: {count}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts.append(f"{format_duration(now - self.started)} elapsed")
        left = self.seconds_left(now)
        if left is not None:
            parts.append(f"about {format_duration(left)} left")
        if self.info:
            parts.append(self.info)
        return ", ".join(parts)

    def seconds_left(self, now: float) -> float | None:
        """Time left at the rate measured since the first update, None when unknown."""
        gained = self.done - self.first_done
        if not self.total or gained <= 0:
            return None
        return (now - self.first_at) / gained * max(self.total - self.done, 0)


class ProgressDisplay:
    """``update(label, done, total, info)`` → a bar per label, or plain lines on stderr.

    ``message(text)`` writes a line on stderr (above the bars on a terminal).
    """

    def __init__(self, console: Console, enabled: bool, interval: float) -> None:
        self._console = console
        self._enabled = enabled
        self._terminal = enabled and console.is_terminal
        self._interval = interval
        self._lock = threading.Lock()
        self._phases: dict[str, _Phase] = {}
        self._current: str | None = None
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> None:
        if not self._enabled:
            return
        if self._terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._bar.start()
        else:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._bar is not None:
            self._bar.stop()

    # -- reporting
    def update(self, label: str, done: int, total: int | None, info: str = "") -> None:
        """Set the phase ``label`` to ``done`` of ``total`` units (``total`` None: unknown)."""
        if not self._enabled:
            return
        now = time.monotonic()
        with self._lock:
            phase = self._phases.get(label)
            new = phase is None
            if phase is None:
                phase = _Phase(label, done, total, info, now, done, now)
                self._phases[label] = phase
            phase.done, phase.total, phase.info = done, total, info
            self._current = label
        if self._bar is not None:
            if new:
                self._tasks[label] = self._bar.add_task(label, total=total, info=info)
            self._bar.update(self._tasks[label], completed=done, total=total, info=info)
        elif new:
            self._write(phase.line(now))

    def message(self, text: str) -> None:
        """One line on stderr, whatever the display."""
        if self._bar is not None:
            self._console.print(text, markup=False, highlight=False)
        else:
            self._write(text)

    def __call__(self, label: str, done: int, total: int | None, info: str = "") -> None:
        self.update(label, done, total, info)

    # -- plain lines
    def _write(self, text: str) -> None:
        with self._lock:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                phase = self._phases.get(self._current) if self._current else None
                text = phase.line(time.monotonic()) if phase is not None else None
            if text is not None:
                self._write(text)


@contextmanager
def progress_display(enabled: bool = True) -> Iterator[ProgressDisplay]:
    """A :class:`ProgressDisplay` on stderr for the duration of the block.

    Args:
        enabled: False shows nothing (``message`` still writes its line).
    """
    display = ProgressDisplay(Console(stderr=True), enabled, _interval())
    display.start()
    try:
        yield display
    finally:
        display.stop()


@contextmanager
def batch_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Yield ``update(label, done, total)`` for batched evaluation work.

    ``enabled`` is kept for callers that pass ``not --json``: progress goes to stderr, so
    it stays on with ``--json`` (stdout keeps its one document).
    """
    del enabled
    with progress_display() as display:
        yield lambda label, done, total: display.update(label, done, total)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM stop the block as Ctrl-C does (so a killed run saves and says so)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _TrainingReporter:
    """Turns :func:`jiio_cli.training.run_training`'s events into lines and a bar."""

    def __init__(self, display: ProgressDisplay) -> None:
        self.display = display
        self.last_eval = ""
        self.first_step_at: float | None = None
        self.steps_seen = 0
        self.estimated = False

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "plan":
            self.plan(event)
        elif kind == "step":
            self.step(event)
        elif kind == "epoch":
            self.last_eval = "  ".join(
                f"{label} {event[key]:{fmt}}"
                for key, label, fmt in _EPOCH_FIELDS
                if isinstance(event.get(key), float | int)
            )
        elif kind == "interrupted":
            self.display.message(
                f"interrupted at step {event['step']} of {event['steps']}; "
                f"checkpoint saved: {event['checkpoint']}"
            )
            self.display.message(f"resume with: {resume_command()}")

    def plan(self, event: dict[str, Any]) -> None:
        resumed = event["done"]
        start = f", resuming at step {resumed}" if resumed else ""
        self.display.message(
            f"training {event['task']} on {event['train_size']} samples: "
            f"{event['steps']} steps ({event['epochs']} epochs of {event['batches']} batches "
            f"of {event['batch_size']}){start} on {event['device']}"
        )
        self.display.message(
            f"checkpoints: {event['checkpoint']} (every epoch"
            + (f" and every {event['save_every']} steps" if event.get("save_every") else "")
            + f"), best held-out: {event['best']}"
        )
        self.total = int(event["steps"])

    def step(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        self.steps_seen += 1
        if self.steps_seen == 1:
            self.first_step_at = now  # the first step pays one-off costs: measure after it
        elif (
            not self.estimated
            and self.first_step_at is not None
            and self.steps_seen == 1 + _ESTIMATE_STEPS
        ):
            self.estimated = True
            per_step = (now - self.first_step_at) / _ESTIMATE_STEPS
            left = max(int(event["steps"]) - int(event["step"]), 0)
            if left == 0:
                return self.show_step(event)
            self.display.message(
                f"estimated time for the {left} steps left: {format_duration(per_step * left)} "
                f"({per_step:.3g} s a step over steps {event['step'] - _ESTIMATE_STEPS + 1}-"
                f"{event['step']}; held-out evaluation after each epoch comes on top)"
            )
        self.show_step(event)

    def show_step(self, event: dict[str, Any]) -> None:
        shown = [f"loss {event['loss']:.4g}"]
        shown += [
            f"{label} {event[key]:{fmt}}"
            for key, label, fmt in _STEP_FIELDS
            if isinstance(event.get(key), float | int)
        ]
        label = f"train (epoch {event['epoch'] + 1})"
        info = "  ".join(part for part in (label, *shown, self.last_eval) if part)
        self.display.update("train", int(event["step"]), int(event["steps"]), info)


@contextmanager
def training_progress(
    total_epochs: int, enabled: bool
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yield a callback for :func:`jiio_cli.training.run_training`.

    It prints the run's plan (task, data size, steps, device, checkpoint paths) before
    the first step and the estimated total time after the first few, drives a bar (or
    plain lines) with the global step, loss and the task's step numbers and the last
    held-out metric, and on Ctrl-C or SIGTERM prints the checkpoint it saved and the
    ``--resume`` command. Everything goes to stderr, so ``--json`` keeps stdout to its
    one document; with several processes only rank 0 receives events.

    Args:
        total_epochs: kept for callers; the plan event carries the run's length.
        enabled: kept for callers, which pass ``rank 0 and not --json``; the events
            already come from rank 0 alone and stderr does not disturb ``--json``.
    """
    del total_epochs, enabled
    with progress_display() as display, _sigterm_as_interrupt():
        yield _TrainingReporter(display)
