"""One rule for solves that did not converge, shared by ``reconstruct``, ``attack`` and ``adapt``.

A result from an unconverged DEQ solve can be wrong in ways nobody sees (an attack that
stopped early looks like robustness; a code that stopped early decodes to a blur), so:

1. the command always reports what it computed, each item with its convergence flag;
2. if any solve did not converge, it ends with one ``error:`` line naming them and how to
   fix it, and exits 1, writing no file from an unconverged solve;
3. with ``--allow-unconverged`` it writes its files, prints one ``warning:`` line naming
   them instead, and exits 0.

What counts is the solves whose results the command reports, each block's residual below
the stated tolerance: ``reconstruct``, the JIIO solve of each image (z*, μ* and x);
``attack``, the fresh forward solves that score the clean and the adversarial images
(``--forward-iterations``); ``adapt``, the read-out solves at the fitted context that the
predictions come from (``--forward-iterations``), not the context fit, an inner
optimisation stopped at its budget and reported as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer

from jiio_cli.errors import JiioError

__all__ = ["enforce_converged", "name_items"]

# How many items a message names before it says "and N more".
_NAMED = 5


def name_items(items: Sequence[str]) -> str:
    """``a, b and 3 more``: a short list for a one-line message."""
    shown = ", ".join(items[:_NAMED])
    rest = len(items) - _NAMED
    return shown + (f" and {rest} more" if rest > 0 else "")


def enforce_converged(unconverged: Sequence[str], *, allow: bool, fix: str) -> None:
    """Apply the rule (module docstring) once the command has reported its results.

    Args:
        unconverged: the items whose solve did not converge, as a user names them
            (``photo.png (not converged)``, ``the clean inputs (3.1%)``).
        allow: ``--allow-unconverged`` was given.
        fix: what to change to converge, e.g. ``raise --iterations``.

    Raises:
        JiioError: (exit 1) when some solve did not converge and ``allow`` is false.
    """
    if not unconverged:
        return
    items = name_items(list(unconverged))
    if allow:
        typer.echo(
            f"warning: the solve did not converge for {items}; results kept because of "
            "--allow-unconverged, treat them with caution",
            err=True,
        )
        return
    raise JiioError(
        f"the solve did not converge for {items}; {fix}, or pass --allow-unconverged to "
        "keep the results"
    )
