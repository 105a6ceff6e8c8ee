"""``jiio attack``: worst-case perturbations of a DEQ classifier's inputs.

Attacks a classifier (the shipped MNIST-5k model unless ``--checkpoint``) on a labelled
set with the JIIO attack, PGD or APGD (CE and DLR losses) with full solves per step, or
the standard evaluation (the per-image worst case of all four), at one or several
budgets, and reports accuracies measured by a fresh forward solve from zeros. When that
solve did not converge on some clean or adversarial image, the command still reports, then
follows the rule of :mod:`jiio_cli.cli.unconverged` (exit 1 unless ``--allow-unconverged``).
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    AllowUnconvergedOption,
    AlphaXOption,
    BatchSizeOption,
    ClassifierCheckpointOption,
    CompileOption,
    DebugOption,
    DeviceOption,
    IterationsOption,
    JsonOption,
    MemoryOption,
    Norm,
    NormOption,
    SeedOption,
    common_options,
    in_panel,
)
from jiio_cli.cli.output import print_json, print_table
from jiio_cli.cli.partial import FinishedBatches
from jiio_cli.cli.progress import batch_progress
from jiio_cli.cli.unconverged import enforce_converged
from jiio_cli.config import parse_eps_list
from jiio_cli.errors import UsageError
from jiio_cli.tasks.adversarial.attacks import COMMAND_ATTACK, SCORING_SOLVE, ThreatModel

if TYPE_CHECKING:
    from jiio_cli.tasks.adversarial.data import AttackTarget

__all__ = ["attack"]

_COLUMNS = [
    "method",
    "norm",
    "eps",
    "clean_accuracy",
    "robust_accuracy",
    "success_rate",
    "mean_norm",
    "max_norm",
    "seconds",
    "attack_unconverged",
    "eval_unconverged",
    "mean_iterations",
]


class Loss(str, Enum):
    ce = "ce"
    margin = "margin"


class Solver(str, Enum):
    anderson = "anderson"
    picard = "picard"


class Method(str, Enum):
    jiio = "jiio"
    pgd = "pgd"
    both = "both"
    apgd = "apgd"
    apgd_ce = "apgd-ce"
    apgd_dlr = "apgd-dlr"
    standard = "standard"


_METHODS: dict[Method, list[str]] = {
    Method.both: ["jiio", "pgd"],
    Method.apgd: ["apgd-ce", "apgd-dlr"],
    Method.standard: ["jiio", "apgd-ce", "apgd-dlr", "pgd"],
}
"""Methods that run several attacks (a worst-case row follows theirs)."""


class AttackCommandConfig(BaseModel):
    """Validated numeric options of ``jiio attack``."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(ge=2, le=10_000)
    memory: int = Field(ge=1, le=100)
    alpha_x: float = Field(gt=0, le=10)
    alpha_x_final: float = Field(gt=0, le=10)
    candidates: int = Field(ge=1, le=100)
    pgd_steps: int = Field(ge=1, le=10_000)
    pgd_step_size: float | None = Field(default=None, gt=0, le=10)
    restarts: int = Field(ge=1, le=100)
    apgd_steps: int = Field(ge=1, le=10_000)
    apgd_restarts: int = Field(ge=1, le=100)
    batch_size: int = Field(ge=1)
    max_images: int | None = Field(default=None, ge=1)
    examples: int = Field(ge=1, le=64)
    forward_iterations: int = Field(ge=1, le=100_000)


_AlphaX = in_panel(AlphaXOption, None, "JIIO's step size α_x, as a fraction of eps.")
_AlphaXFinal = Annotated[
    float,
    typer.Option(
        "--alpha-x-final", help="JIIO's α_x after its switch at max(50, 5T/8) (fraction of eps)."
    ),
]


_Eps = Annotated[
    str, typer.Option(help="Budget(s): 0.3, 8/255 or a list 0.1,0.2,0.3 (one row each).")
]
_Method = Annotated[
    Method,
    typer.Option(
        help="jiio; pgd, apgd-ce or apgd-dlr (full solves per step); both (jiio, pgd); "
        "apgd (apgd-ce, apgd-dlr); standard (the per-image worst case of all four)."
    ),
]
_Data = Annotated[
    Path | None,
    typer.Option(
        help="Labelled images: folder with class subfolders, .npz or MNIST IDX "
        "(default: MNIST-5k held-out split)."
    ),
]
_MaxImages = Annotated[int | None, typer.Option(help="Attack only the first N images.")]
_Candidates = Annotated[
    int,
    typer.Option(
        help="JIIO iterates compared per image, evenly spaced up to the last (each earlier "
        "one scored by a forward solve); the strongest is kept. 1: the last only."
    ),
]
_Loss = Annotated[Loss, typer.Option(help="JIIO attack objective: logit margin or cross-entropy.")]
_Solver = Annotated[
    Solver,
    typer.Option(
        help="JIIO solver on the stacked state (z, x, μ): picard (damped plain "
        "iteration) or anderson."
    ),
]
_PGDSteps = Annotated[int, typer.Option(help="PGD steps per restart.")]
_PGDLoss = Annotated[Loss, typer.Option(help="PGD objective (standard PGD: ce).")]
_PGDStepSize = Annotated[
    float | None, typer.Option(help="PGD step as a fraction of eps (default 2.5/steps).")
]
_Restarts = Annotated[int, typer.Option(help="PGD random restarts.")]
_APGDSteps = Annotated[int, typer.Option(help="APGD steps per restart.")]
_APGDRestarts = Annotated[int, typer.Option(help="APGD random restarts.")]
_SaveExamples = Annotated[
    Path | None,
    typer.Option(help="Folder for adversarial PNGs and a clean/perturbation/adversarial grid."),
]
_Examples = Annotated[int, typer.Option(help="How many examples --save-examples writes.")]
_ForwardIterations = Annotated[
    int,
    typer.Option(
        "--forward-iterations",
        help="Iteration budget of the fresh forward solve (from zeros, to residual "
        f"{SCORING_SOLVE.tol:g}) that scores every clean and adversarial image.",
    ),
]


def attack(
    eps: _Eps = "0.1",
    norm: NormOption = Norm.linf,
    method: _Method = Method.jiio,
    checkpoint: ClassifierCheckpointOption = None,
    data: _Data = None,
    max_images: _MaxImages = None,
    batch_size: BatchSizeOption = 250,
    iterations: IterationsOption = COMMAND_ATTACK.iterations,
    memory: MemoryOption = COMMAND_ATTACK.memory,
    alpha_x: _AlphaX = COMMAND_ATTACK.alpha,
    alpha_x_final: _AlphaXFinal = COMMAND_ATTACK.alpha_final or COMMAND_ATTACK.alpha,
    candidates: _Candidates = COMMAND_ATTACK.candidates,
    loss: _Loss = Loss(COMMAND_ATTACK.loss),
    solver: _Solver = Solver(COMMAND_ATTACK.solver),
    pgd_steps: _PGDSteps = 20,
    pgd_loss: _PGDLoss = Loss.ce,
    pgd_step_size: _PGDStepSize = None,
    restarts: _Restarts = 1,
    apgd_steps: _APGDSteps = 50,
    apgd_restarts: _APGDRestarts = 1,
    save_examples: _SaveExamples = None,
    examples: _Examples = 16,
    forward_iterations: _ForwardIterations = SCORING_SOLVE.max_iter,
    allow_unconverged: AllowUnconvergedOption = False,
    compile_graph: CompileOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Attack a DEQ classifier inside an eps-ball and report robust accuracy.

    Every clean and adversarial image is scored by a fresh forward solve from zeros to a
    tight tolerance; perturbed images stay in the pixel box [0, 1]. If that solve did not
    converge on some image, the table is printed and the command exits 1 (0 with
    --allow-unconverged). Ctrl-C prints the results over the batches of images finished so
    far, marked partial, and exits 130."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        budgets = parse_eps_list(eps)
        opts = AttackCommandConfig(
            iterations=iterations,
            memory=memory,
            alpha_x=alpha_x,
            alpha_x_final=alpha_x_final,
            candidates=candidates,
            pgd_steps=pgd_steps,
            pgd_step_size=pgd_step_size,
            restarts=restarts,
            apgd_steps=apgd_steps,
            apgd_restarts=apgd_restarts,
            batch_size=batch_size,
            max_images=max_images,
            examples=examples,
            forward_iterations=forward_iterations,
        )
        _check_paths_and_budgets(eps, budgets, norm, save_examples)
        dev = common.torch_device
        scoring = dataclasses.replace(SCORING_SOLVE, max_iter=opts.forward_iterations)
        torch.manual_seed(common.seed)
        from jiio_cli.tasks.adversarial.data import load_attack_target

        target = load_attack_target(checkpoint, data, opts.max_images, dev)
        _sweep_and_report(
            target,
            [(norm.value, e) for e in budgets],
            method,
            _attack_configs(opts, loss, solver, pgd_loss, compile_graph),
            opts,
            (save_examples, allow_unconverged),
            scoring,
            common,
        )


def _sweep_and_report(
    target: Any,
    budgets: list[tuple[str, float]],
    method: Method,
    configs: Any,
    opts: AttackCommandConfig,
    files: tuple[Path | None, bool],
    scoring: Any,
    common: Any,
) -> None:
    """Run the sweep, then report it and apply the unconverged rule; on Ctrl-C, report the
    images finished so far (``files``: ``--save-examples``, ``--allow-unconverged``)."""
    save_examples, allow_unconverged = files
    err = Console(stderr=True)
    finished = FinishedBatches[Any](int(target.images.shape[0]), opts.batch_size, "images")
    try:
        result = _sweep_with_progress(
            target,
            budgets,
            method,
            configs,
            opts,
            save_examples is not None,
            scoring,
            common,
            err,
            finished,
        )
    except KeyboardInterrupt:
        # Ctrl-C: the images finished so far; the boundary then exits 130.
        _report_partial(target, finished, files, scoring, common)
        raise
    unconverged = _write_and_report(target, result, files, scoring, common, None)
    enforce_converged(
        unconverged,
        allow=allow_unconverged,
        fix=f"raise --forward-iterations (now {scoring.max_iter})",
    )


def _report_partial(
    target: Any,
    finished: FinishedBatches[Any],
    files: tuple[Path | None, bool],
    scoring: Any,
    common: Any,
) -> None:
    """What an interrupted sweep had finished: the rows over the images of its finished
    batches (and their examples, under the unconverged rule), marked partial."""
    if finished.result is not None:
        _write_and_report(target, finished.result, files, scoring, common, finished)
    elif common.json_output:
        print_json(
            {"checkpoint": str(target.checkpoint), "images": 0, "rows": []} | finished.as_json()
        )
    else:
        typer.echo(finished.note())


def _write_and_report(
    target: Any,
    result: Any,
    files: tuple[Path | None, bool],
    scoring: Any,
    common: Any,
    partial: FinishedBatches[Any] | None,
) -> list[str]:
    """Write the examples (not from an unconverged verdict unless allowed) and report the
    ``result`` (marked ``partial`` when given); the rule's unconverged items. ``files``:
    ``--save-examples``, ``--allow-unconverged``."""
    save_examples, allow_unconverged = files
    warnings = _attack_warnings(target.notes, result)
    unconverged = _unconverged_items(result)
    keep = not unconverged or allow_unconverged
    written = _save_examples(save_examples if keep else None, target, result)
    document = _attack_document(target, result, warnings, written, common.torch_device, common.seed)
    document["forward_solve"] = {"max_iter": scoring.max_iter, "tol": scoring.tol}
    document["unconverged"] = unconverged
    document.update({"complete": True} if partial is None else partial.as_json())
    _report(document, result, warnings, Console(stderr=True), json_output=common.json_output)
    if partial is not None and not common.json_output:
        typer.echo(partial.note())
    return unconverged


def _sweep_with_progress(
    target: Any,
    budgets: list[tuple[str, float]],
    method: Method,
    configs: Any,
    opts: AttackCommandConfig,
    keep_examples: bool,
    scoring: Any,
    common: Any,
    err: Console,
    finished: FinishedBatches[Any],
) -> Any:
    """Run every method at every budget under one progress display, keeping the result
    over the finished batches in ``finished``; a note first on what the worst (or
    standard) row means when several methods run."""
    methods = _METHODS.get(method, [method.value])
    worst_label = "standard" if method == Method.standard else "worst"
    if len(methods) > 1 and not common.json_output:
        err.print(_worst_row_note(worst_label, methods))
    with batch_progress(not common.json_output) as progress:
        return _run_sweep(
            target,
            budgets,
            methods,
            configs,
            opts.batch_size,
            common.seed,
            keep_examples=opts.examples if keep_examples else 0,
            progress=progress,
            worst_label=worst_label,
            scoring=scoring,
            on_batch=lambda done: finished.record(done, int(done.clean_predictions.shape[0])),
        )


def _worst_row_note(worst_label: str, methods: list[str]) -> str:
    """What the row after several methods' rows means."""
    return f"the {worst_label} row: robust = survived every one of {', '.join(methods)} (per image)"


def _check_paths_and_budgets(
    eps: str, budgets: list[float], norm: Norm, save_examples: Path | None
) -> None:
    """Refuse an L∞ budget above the pixel box and a ``--save-examples`` that is a file."""
    if norm == Norm.linf and any(e > 1 for e in budgets):
        raise UsageError(f"--eps {eps}: an L∞ budget above 1 covers the whole pixel box [0, 1]")
    if save_examples is not None and save_examples.exists() and not save_examples.is_dir():
        raise UsageError(f"--save-examples {save_examples} exists and is not a folder")


def _attack_configs(
    opts: AttackCommandConfig, loss: Loss, solver: Solver, pgd_loss: Loss, graph: bool
) -> tuple[Any, Any, Any]:
    """The JIIO, PGD and APGD attack configurations the options describe."""
    from jiio_cli.tasks.adversarial.apgd import APGDConfig
    from jiio_cli.tasks.adversarial.attacks import JIIOAttackConfig, PGDConfig

    jiio = JIIOAttackConfig(
        iterations=opts.iterations,
        memory=opts.memory,
        alpha=opts.alpha_x,
        alpha_final=opts.alpha_x_final,
        loss=loss.value,  # type: ignore[arg-type]
        solver=solver.value,  # type: ignore[arg-type]
        candidates=opts.candidates,
        graph=graph,
    )
    pgd = PGDConfig(
        steps=opts.pgd_steps,
        step_size=opts.pgd_step_size,
        restarts=opts.restarts,
        loss=pgd_loss.value,  # type: ignore[arg-type]
    )
    return jiio, pgd, APGDConfig(steps=opts.apgd_steps, restarts=opts.apgd_restarts)


def _run_sweep(
    target: AttackTarget,
    threats: list[tuple[str, float]],
    methods: list[str],
    configs: tuple[Any, Any, Any],
    batch_size: int,
    seed: int,
    *,
    keep_examples: int,
    progress: Any,
    worst_label: str,
    scoring: Any,
    on_batch: Any,
) -> Any:
    """Every method at every (norm, eps) budget on the target's images; ``on_batch`` gets
    the result over the images finished after each batch."""
    from jiio_cli.tasks.adversarial.sweep import run_attack_sweep

    jiio, pgd, apgd = configs
    return run_attack_sweep(
        target.model,
        target.images,
        target.labels,
        [ThreatModel(norm, eps) for norm, eps in threats],
        methods,  # type: ignore[arg-type]
        jiio,
        pgd,
        batch_size,
        seed,
        keep_examples=keep_examples,
        progress=progress,
        apgd=apgd,
        worst_label=worst_label,
        scoring=scoring,
        on_batch=on_batch,
    )


def _unconverged_items(result: Any) -> list[str]:
    """What the scoring solve did not converge on, as the rule's message names it: the
    clean inputs (their share), then per budget the images with an adversarial image (of
    any method) scored by an unconverged solve (count and share)."""
    items = []
    if result.clean_unconverged > 0:
        items.append(f"the clean inputs ({100 * result.clean_unconverged:.1f}%)")
    for (norm, eps), flags in result.eval_unconverged.items():
        count = sum(flags)
        if count:
            label = ThreatModel(norm, eps).label()
            noun = "adversarial image" if count == 1 else "adversarial images"
            items.append(f"{label}: {count} {noun} ({100 * count / len(flags):.1f}%)")
    return items


def _attack_warnings(notes: list[str], result: Any) -> list[str]:
    """Loading notes, then which worst-case rows counted unconverged verdicts as broken
    (whether results stand at all is the rule's line, :func:`_unconverged_items`)."""
    warnings = list(notes)
    for row in result.rows:
        if row.unconverged_counted_broken:
            warnings.append(
                f"{row.method} {row.norm} {row.eps:g}: {100 * row.eval_unconverged:.1f}% "
                "of the images had an adversarial image scored by an unconverged solve; "
                "they are counted as broken"
            )
    return warnings


def _save_examples(folder: Path | None, target: AttackTarget, result: Any) -> list[str]:
    """Write the kept adversarial examples into ``folder`` (if given); the files written."""
    if folder is None:
        return []
    from jiio_cli.tasks.adversarial.examples import save_attack_examples

    return save_attack_examples(folder, target.images, target.labels, result)


def _attack_document(
    target: AttackTarget,
    result: Any,
    warnings: list[str],
    written: list[str],
    dev: torch.device,
    seed: int,
) -> dict[str, Any]:
    """The JSON document of one ``jiio attack`` run."""
    return {
        "checkpoint": str(target.checkpoint),
        "images": int(result.clean_predictions.shape[0]),
        "clean_accuracy": result.rows[0].clean_accuracy if result.rows else None,
        "clean_unconverged": result.clean_unconverged,
        "rows": [row.as_dict() for row in result.rows],
        "per_image": [
            {
                "norm": norm_name,
                "eps": budget,
                "broken_by": broken,
                "eval_unconverged": result.eval_unconverged[(norm_name, budget)],
            }
            for (norm_name, budget), broken in result.broken_by.items()
        ],
        "warnings": warnings,
        "examples": written,
        "device": str(dev),
        "seed": seed,
    }


def _report(
    document: dict[str, Any],
    result: Any,
    warnings: list[str],
    err: Console,
    *,
    json_output: bool,
) -> None:
    """Warnings on stderr, then the document (``--json``) or the table on stdout."""
    for line in warnings:
        err.print(line)
    if json_output:
        print_json(document)
    else:
        print_table(
            [row.as_dict() for row in result.rows],
            title=f"jiio attack ({document['images']} images, clean accuracy "
            f"{document['clean_accuracy']:.4f})",
            columns=_COLUMNS,
        )
