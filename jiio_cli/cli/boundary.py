"""The error boundary every command runs inside.

It turns exceptions into one line on stderr and an exit code, so users see what went wrong
and how to fix it instead of a traceback:

====================================  ====  ==========================================
exception                             exit  line on stderr
====================================  ====  ==========================================
:class:`~jiio_cli.errors.UsageError`  2     ``error: <message>``
:class:`~jiio_cli.errors.JiioError`   1     ``error: <message>``
pydantic ``ValidationError``          2     ``error: invalid --seed -1: ...``
``KeyboardInterrupt``                 130   ``error: interrupted``
``torch.cuda.OutOfMemoryError``       1     suggests a smaller ``--batch-size``
anything else                         1     ``error: internal error: ...``
====================================  ====  ==========================================

With ``--debug`` the full traceback is printed above the line.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import torch
import typer
from pydantic import ValidationError

from jiio_cli.errors import JiioError, one_line

__all__ = ["error_boundary", "format_validation_error", "run_command"]

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# Typer/click signal exits and their own usage errors with exceptions; those must pass
# through untouched. ClickException is looked up by name because typer versions differ
# in where they expose it.
_CLICK_EXCEPTION: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)
_PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, _CLICK_EXCEPTION)

# Options whose flag differs from the field name.
_FLAG_NAMES = {"json_output": "--json"}


def _flag(loc: tuple[int | str, ...]) -> str:
    if len(loc) == 1 and isinstance(loc[0], str):
        return _FLAG_NAMES.get(loc[0], "--" + loc[0].replace("_", "-"))
    return ".".join(str(part) for part in loc) or "options"


def format_validation_error(exc: ValidationError) -> str:
    """One line describing every invalid option in ``exc``, naming options as flags."""
    problems = []
    for error in exc.errors(include_url=False):
        flag = _flag(tuple(error["loc"]))
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown option {flag}; remove it or check its spelling")
        elif error["type"] == "value_error":
            # Our own validators already write the whole message, fix included.
            problems.append(str(error["msg"]).removeprefix("Value error, "))
        else:
            shown = error.get("input")
            reason = str(error["msg"]).lower()
            problems.append(f"invalid {flag} {shown!r}: {reason} (see --help)")
    return one_line("; ".join(problems))


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(code) from None


@contextlib.contextmanager
def error_boundary(*, debug: bool = False) -> Iterator[None]:
    """Run the body of a command, reporting any exception as one line and an exit code.

    Args:
        debug: print the full traceback before the line.

    Raises:
        typer.Exit: with the exit code of the failure.
    """
    try:
        yield
    except _PASS_THROUGH:
        raise
    except (KeyboardInterrupt, Exception) as exc:  # SystemExit keeps its own exit code
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        _report(exc, debug=debug)


def _report(exc: BaseException, *, debug: bool) -> NoReturn:
    if isinstance(exc, KeyboardInterrupt):
        _fail("interrupted", EXIT_INTERRUPTED)
    if isinstance(exc, JiioError):
        _fail(exc.message, exc.exit_code)
    if isinstance(exc, ValidationError):
        _fail(format_validation_error(exc), EXIT_USAGE)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        _fail("the GPU ran out of memory; retry with a smaller --batch-size", EXIT_FAILURE)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    hint = "the traceback is above" if debug else "rerun with --debug for the traceback"
    _fail(f"internal error ({detail}); {hint}", EXIT_FAILURE)


def run_command(body: Callable[[], T], *, debug: bool = False) -> T:
    """Call ``body`` inside :func:`error_boundary` and return its result."""
    with error_boundary(debug=debug):
        return body()
    raise AssertionError("unreachable: the boundary either returns or exits")  # pragma: no cover
