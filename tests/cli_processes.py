"""``jiio`` in a child process, as a person or a batch job starts it, and its stderr lines."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

JIIO = [sys.executable, "-c", "from jiio_cli.cli.app import main; main()"]

PROGRESS_LINE = re.compile(r"^.+: \d+(/\d+ \(\d+%\))?, .*\belapsed\b")
"""A plain progress line on stderr: ``episodes (across): 2/40 (5%), 1 s elapsed, ...``."""


def jiio_env(**extra: str) -> dict[str, str]:
    """The environment of the child: one thread, a wide terminal, colour allowed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="160", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def start_jiio(args: list[str], **env: str) -> subprocess.Popen[str]:
    """``jiio ARGS`` with stdout and stderr on pipes (text) and ``env`` added."""
    # A shell without job control starts background jobs with SIGINT ignored, and the
    # child would inherit that; give it the default disposition, as a terminal would.
    return subprocess.Popen(
        [*JIIO, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=jiio_env(**env),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 180) -> list[str]:
    """Read stderr lines until one matches ``pattern``; all lines read so far."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return seen
    proc.kill()
    raise AssertionError(f"no line matching {pattern!r}; stderr so far: {seen}")
