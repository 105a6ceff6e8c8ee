"""``jiio`` in a child process, as a person or a batch job starts it, and its stderr lines."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

JIIO = [sys.executable, "-c", "from jiio_cli.cli.app import main; main()"]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
"""Terminal control sequences (colour, cursor moves, titles), removed from screen text."""

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


def run_on_terminal(
    args: list[str], timeout: float = 240, interrupt_when: str | None = None
) -> tuple[int, str]:
    """Run ``jiio ARGS`` with stdin, stdout and stderr on a pseudo-terminal; (exit code,
    screen text without control sequences).

    Args:
        interrupt_when: once the screen so far matches this pattern, send SIGINT (what
            the terminal does on Ctrl-C), once.
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*JIIO, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=jiio_env(),
        close_fds=True,
        # A shell runs background jobs with SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: give the child the disposition of a terminal's job.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if interrupt_when is not None and re.search(interrupt_when, _screen(chunks)):
            proc.send_signal(signal.SIGINT)
            interrupt_when = None
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=30)
    return code, _screen(chunks)


def _screen(chunks: list[bytes]) -> str:
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
