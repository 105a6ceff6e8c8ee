"""Per-task defaults of ``jiio train``: what ``jiio train --task T`` runs with no other option.

The command's declared defaults (``epochs = 10``, MNIST-5k in full, ...) are those of the
recipes in ``recipes/``: a run with ``--config`` keeps them for every option its file
leaves out, so each shipped model's recipe trains what it trained when it was written.
Without ``--config``, the options the user did not type take :data:`TASK_DEFAULTS`
instead: a run that, on a 2-core CPU, finishes (data, training, its held-out evaluation
after each epoch and the checkpoints) in about 15 minutes with a model that is useful on
held-out data. ``models/README.md`` and ``BENCHMARKS.md`` give each run's measured time
and held-out figures.

``--task meta`` takes its defaults only for the default dataset (glyphs): a run with
``--dataset`` typed (omniglot, sinusoid) keeps the command's declared defaults and, for
sinusoid, its own (``train_meta.SINUSOID_DEFAULTS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

__all__ = ["TASK_DEFAULTS", "apply_task_defaults", "default_help"]

_DECODER = {"epochs": 2, "batch_size": 16, "iterations": 60}
"""Two epochs of all 4,500 MNIST-5k training digits in batches of 16 (564 steps), JIIO with
60 iterations per batch (the held-out evaluation after each epoch then takes 120).

Small batches buy four times the steps of batches of 64 for the same compute, and 60
iterations give the training better codes than 40. On a 2-core CPU (one thread) each
decoder task takes 13 to 14 minutes of CPU time; BENCHMARKS.md ("Short training runs")
has the models they give."""

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "denoise": dict(_DECODER),
    "inpaint": dict(_DECODER),
    "generate": dict(_DECODER),
    # The shipped classifier's recipe (step size 2e-3, Jacobian weight 1.0) for two epochs
    # instead of three: the held-out evaluation after each epoch is a 500-digit attack.
    "adversarial": {"epochs": 2, "lr": 2e-3, "jac_weight": 1.0},
    # The shipped meta-glyphs recipe for three epochs instead of six: class centroids read
    # the queries (with the linear head that recipe reached 69.5 % 5-way, not 90.0 %).
    "meta": {
        "epochs": 3,
        "readout": "centroids",
        "ways": "5,20",
        "queries": 2,
        "image_size": 20,
        "jac_weight": 0.5,
        "lr": 2e-3,
    },
}
"""``--task`` → ``train`` parameter name → its default when no ``--config`` is given."""


def apply_task_defaults(
    values: Mapping[str, Any], given: Set[str], task: str, recipe: bool
) -> dict[str, Any]:
    """``values`` with the task's defaults (:data:`TASK_DEFAULTS`) for the options not given.

    Args:
        values: ``train``'s parameter values by name (declared defaults where untyped).
        given: the parameter names typed on the command line or set by a recipe.
        task: the ``--task`` value.
        recipe: whether ``--config`` was given (then the declared defaults stay).

    Returns:
        A new dict; ``values`` is not changed.
    """
    resolved = dict(values)
    if recipe or (task == "meta" and "dataset" in given):
        return resolved
    for name, value in TASK_DEFAULTS[task].items():
        if name not in given:
            resolved[name] = value
    return resolved


_DECODERS = ("denoise", "inpaint", "generate")


def default_help(name: str, declared: Any) -> str:
    """The defaults of ``train`` parameter ``name`` for its help text, tasks with the same
    value grouped, e.g. ``"decoders 4, adversarial 2, meta 3; else 10"``: "else" (the
    declared ``declared``) is what the other tasks and every ``--config`` run get;
    ``"default all"`` when no task has a value of its own."""
    by_value: dict[str, list[str]] = {}
    for task, defaults in TASK_DEFAULTS.items():
        if name in defaults:
            by_value.setdefault(_shown(defaults[name]), []).append(task)
    if not by_value:
        return f"default {_shown(declared)}"
    named = ", ".join(f"{_group(tasks)} {value}" for value, tasks in by_value.items())
    return f"{named}; else {_shown(declared)}"


def _group(tasks: list[str]) -> str:
    """Task names joined by "/", the three decoder tasks named "decoders" when all share."""
    if not set(_DECODERS) <= set(tasks):
        return "/".join(tasks)
    return "/".join(["decoders", *(task for task in tasks if task not in _DECODERS)])


def _shown(value: Any) -> str:
    if value is None:
        return "all"
    return f"{value:g}" if isinstance(value, float) else str(value)
