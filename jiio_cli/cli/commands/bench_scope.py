"""Which ``jiio bench`` options each ``--task`` reads.

``bench`` has one signature for every task; an option the chosen task does not read is
refused in one line instead of being silently ignored (``jiio bench --task adapt --eps
0.3`` would otherwise run the adapt bench and say nothing of ``--eps``).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from jiio_cli.errors import UsageError

__all__ = ["BENCH_OPTIONS", "reject_misplaced_bench_options"]

_COMMON = frozenset({"task", "device", "seed", "json_output", "debug"})

_JIIO_SOLVER = frozenset({"memory", "alpha_x", "x_weight", "solve_iters"})

BENCH_OPTIONS: dict[str, frozenset[str]] = {
    "reconstruct": _COMMON
    | _JIIO_SOLVER
    | {
        "checkpoint",
        "corruption",
        "batch_size",
        "naive_steps",
        "alpha_x_start",
        "start_iterations",
        "quality",
        "count",
        "iterations",
        "plot",
        "repeat",
        "compile_graph",
    },
    "engine": _COMMON
    | {"batch_size", "channels", "size", "sizes", "precision", "history", "compile_graph"},
    "attack": _COMMON
    | {"checkpoint", "eps", "norm", "batch_size", "candidates", "plot", "repeat", "compile_graph"},
    "adapt": _COMMON
    | _JIIO_SOLVER
    | {
        "checkpoint",
        "batch_size",
        "naive_steps",
        "ways",
        "film_scale",
        "plot",
        "repeat",
        "compile_graph",
    },
    "train": _COMMON | {"train_task", "epochs", "max_train", "batch_size"},
}
"""``bench`` parameter names each ``--task`` reads (in the order of ``--task``'s values)."""

_FLAGS = {"json_output": "--json", "compile_graph": "--compile"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def reject_misplaced_bench_options(task: str, explicit: AbstractSet[str]) -> None:
    """UsageError naming the first typed option that ``task`` does not read.

    Args:
        task: the ``--task`` value.
        explicit: ``bench`` parameter names the user typed
            (:func:`~jiio_cli.cli.options.explicit_options`).
    """
    misplaced = sorted(set(explicit) - BENCH_OPTIONS[task])
    if not misplaced:
        return
    name = misplaced[0]
    owners = [t for t, names in BENCH_OPTIONS.items() if name in names]
    listed = " and ".join([", ".join(owners[:-1]), owners[-1]] if owners[1:] else owners)
    raise UsageError(f"{_flag(name)} applies to --task {listed} only")
