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

Why, measured on a 2-core CPU with one thread (held-out PSNR of the decoded image alone,
500 digits): the earlier 80 steps of 64 reached 13.9 to 14.9 dB for denoise (σ = 0.2,
where the clipped noisy input scores 16.75 dB); batches of 16 buy four times the steps
for the same compute, and 60 iterations instead of 40 give the training better codes and
the evaluation one nearer convergence (3 epochs at 40 iterations: 16.6, 16.7, then
15.7 dB). These defaults: denoise 17.0 then 16.7 dB in 787 s of CPU time; inpaint 16.9
then 16.8 dB (the masked input: median 15.9 dB) in 826 s; generate 16.4 dB, with a
Fréchet distance on classifier features (``jiio sample --n 500 --fd``) of 20.6 for the
last checkpoint (25.7 for the best; 26.6 before) in 770 s. The last evaluation, latent
density and range error after the last step take 40 to 50 % of the wall time. ``jiio
reconstruct``'s 300 iterations find better codes than the evaluation's 120: 18.7 to 19.0 dB
for denoise, 17.8 for inpaint on 128 held-out digits. A learning rate of 3e-3 (13.9 dB) and a latent
of 64 (16.7, 16.5, 15.2 dB at 40 iterations) did not help."""

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
