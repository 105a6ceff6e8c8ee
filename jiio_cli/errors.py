"""Errors that jiio reports to the user as one line and an exit code.

Anything raised as a :class:`JiioError` is an expected failure: the command line prints its
message without a traceback. Every message is a single line that names the problem and
says how to fix it, e.g. ``checkpoint runs/a.safetensors not found; check the path``.
"""

from __future__ import annotations

__all__ = ["JiioError", "NotBuiltError", "UsageError", "one_line"]


def one_line(text: str) -> str:
    """Collapse ``text`` to one line: messages may embed values that contain newlines."""
    return " ".join(text.split())


class JiioError(Exception):
    """A runtime failure that jiio explains to the user (exit code 1)."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))

    @property
    def message(self) -> str:
        """The one-line message shown to the user."""
        return str(self)


class UsageError(JiioError):
    """A bad argument, option or input file given by the user (exit code 2)."""

    exit_code = 2


class NotBuiltError(JiioError):
    """A command whose task is not implemented in this version (exit code 1).

    Commands raise this instead of pretending to work, so scripts see a failure.
    """

    def __init__(self, command: str, task: str) -> None:
        super().__init__(f"jiio {command}: the {task} task is not built yet in this version")
        self.command = command
        self.task = task
