"""Which ``jiio train`` options each task reads.

``jiio train`` has one signature for every task, so an option of one task can be typed
with another (``--latent-dim`` with ``--task adversarial``). Such an option would do
nothing; it is rejected in one line that names the tasks it belongs to. The tables
hold ``train`` parameter names; ``--task meta --dataset sinusoid`` has its own, stricter
table in :mod:`jiio_cli.cli.commands.train_meta`, which also fills in its defaults.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from jiio_cli.errors import UsageError

__all__ = ["COMMON_OPTIONS", "TASK_OPTIONS", "option_flag", "reject_misplaced_options"]

COMMON_OPTIONS = frozenset(
    {
        "task",
        "out",
        "resume",
        "init",
        "epochs",
        "lr",
        "inner",
        "inner_iters",
        "jac_weight",
        "save_every",
        "max_bad_steps",
        "max_grad_norm",
        "nproc",
        "device",
        "seed",
        "json_output",
        "debug",
    }
)
"""Options every task reads."""

_DECODER = frozenset(
    {
        "data",
        "batch_size",
        "image_size",
        "channels",
        "max_train",
        "sigma",
        "hole_size",
        "mask_ratio",
        "latent_dim",
        "width",
        "state_resolution",
        "augment",
        "precision",
    }
)
_ADVERSARIAL = frozenset(
    {
        "data",
        "batch_size",
        "image_size",
        "channels",
        "max_train",
        "width",
        "num_classes",
        "eps",
        "norm",
        "pgd_steps",
        "warmup_epochs",
    }
)
_META = frozenset(
    {
        "data",
        "dataset",
        "image_size",
        "width",
        "ways",
        "shots",
        "queries",
        "tasks_per_step",
        "episodes_per_epoch",
        "context_dim",
        "naive_steps",
        "hyper_step",
        "context_step",
        "readout",
        "context_penalty",
        "head_context",
        "support_loss",
        "pseudo_augment",
        "pseudo_copies",
        "metric_context",
    }
)

TASK_OPTIONS: dict[str, frozenset[str]] = {
    "generate": COMMON_OPTIONS | _DECODER,
    "denoise": COMMON_OPTIONS | _DECODER,
    "inpaint": COMMON_OPTIONS | _DECODER,
    "adversarial": COMMON_OPTIONS | _ADVERSARIAL,
    "meta": COMMON_OPTIONS | _META,
}
"""``train`` parameter names each ``--task`` reads."""

_SWITCHES = frozenset({"head_context", "metric_context", "resume"})
"""``train`` parameters typed as ``--name`` or ``--no-name``."""


def option_flag(name: str) -> str:
    """How a ``train`` parameter is typed (``latent_dim`` → ``--latent-dim``)."""
    if name == "json_output":
        return "--json"
    flag = name.replace("_", "-")
    return f"--{flag}/--no-{flag}" if name in _SWITCHES else f"--{flag}"


def reject_misplaced_options(task: str, explicit: AbstractSet[str]) -> None:
    """UsageError naming the first typed option that ``task`` does not read.

    Args:
        task: the ``--task`` value.
        explicit: ``train`` parameter names the user typed
            (:func:`~jiio_cli.cli.options.explicit_options`).
    """
    misplaced = sorted(set(explicit) - TASK_OPTIONS[task])
    if not misplaced:
        return
    name = misplaced[0]
    owners = [t for t, names in TASK_OPTIONS.items() if name in names]
    raise UsageError(
        f"{option_flag(name)} does not apply to --task {task} "
        f"(it is for --task {', '.join(owners)}); remove it"
    )
