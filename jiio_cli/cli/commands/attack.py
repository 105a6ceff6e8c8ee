"""``jiio attack``: worst-case perturbations of a DEQ classifier's inputs.

Attacks a classifier (the shipped MNIST-5k model unless ``--checkpoint``) on a labelled
set with the JIIO attack, PGD with full solves per step, or both, at one or several
budgets, and reports accuracies measured by a fresh, fully converged forward solve.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import torch
import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    CompileOption,
    DebugOption,
    DeviceOption,
    JsonOption,
    SeedOption,
    common_options,
)
from jiio_cli.cli.output import print_json, print_table
from jiio_cli.cli.progress import batch_progress
from jiio_cli.config import parse_eps_list
from jiio_cli.errors import UsageError
from jiio_cli.tasks.adversarial.attacks import COMMAND_ATTACK

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
    "mean_iterations",
]


class Norm(str, Enum):
    linf = "linf"
    l2 = "l2"


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


class AttackCommandConfig(BaseModel):
    """Validated numeric options of ``jiio attack``."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(ge=2, le=10_000)
    memory: int = Field(ge=1, le=100)
    alpha: float = Field(gt=0, le=10)
    alpha_final: float = Field(gt=0, le=10)
    candidates: int = Field(ge=1, le=100)
    pgd_steps: int = Field(ge=1, le=10_000)
    pgd_step_size: float | None = Field(default=None, gt=0, le=10)
    restarts: int = Field(ge=1, le=100)
    batch_size: int = Field(ge=1)
    max_images: int | None = Field(default=None, ge=1)
    examples: int = Field(ge=1, le=64)


def attack(
    eps: Annotated[
        str, typer.Option(help="Budget(s): 0.3, 8/255 or a list 0.1,0.2,0.3 (one row each).")
    ] = "0.1",
    norm: Annotated[Norm, typer.Option(help="Threat model: linf or l2.")] = Norm.linf,
    method: Annotated[
        Method, typer.Option(help="jiio, pgd (full solves per step) or both.")
    ] = Method.jiio,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", "-c", help="Classifier checkpoint (default: shipped)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Labelled images: folder with class subfolders, .npz or MNIST IDX "
            "(default: MNIST-5k held-out split)."
        ),
    ] = None,
    max_images: Annotated[int | None, typer.Option(help="Attack only the first N images.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 250,
    iterations: Annotated[int, typer.Option(help="JIIO iterations.")] = COMMAND_ATTACK.iterations,
    memory: Annotated[int, typer.Option(help="JIIO Anderson memory.")] = COMMAND_ATTACK.memory,
    alpha: Annotated[
        float, typer.Option(help="JIIO step size as a fraction of eps.")
    ] = COMMAND_ATTACK.alpha,
    alpha_final: Annotated[
        float, typer.Option(help="JIIO step size after the switch (fraction of eps).")
    ] = COMMAND_ATTACK.alpha_final or COMMAND_ATTACK.alpha,
    candidates: Annotated[
        int,
        typer.Option(
            help="JIIO iterates compared per image, evenly spaced up to the last (each earlier "
            "one scored by a forward solve); the strongest is kept. 1: the last only."
        ),
    ] = COMMAND_ATTACK.candidates,
    loss: Annotated[
        Loss, typer.Option(help="JIIO attack objective: logit margin or cross-entropy.")
    ] = Loss(COMMAND_ATTACK.loss),
    solver: Annotated[
        Solver,
        typer.Option(
            help="JIIO solver on the stacked state (z, x, μ): picard (damped plain "
            "iteration) or anderson."
        ),
    ] = Solver(COMMAND_ATTACK.solver),
    pgd_steps: Annotated[int, typer.Option(help="PGD steps per restart.")] = 20,
    pgd_loss: Annotated[Loss, typer.Option(help="PGD objective (standard PGD: ce).")] = Loss.ce,
    pgd_step_size: Annotated[
        float | None, typer.Option(help="PGD step as a fraction of eps (default 2.5/steps).")
    ] = None,
    restarts: Annotated[int, typer.Option(help="PGD random restarts.")] = 1,
    save_examples: Annotated[
        Path | None,
        typer.Option(help="Folder for adversarial PNGs and a clean/perturbation/adversarial grid."),
    ] = None,
    examples: Annotated[int, typer.Option(help="How many examples --save-examples writes.")] = 16,
    compile_graph: CompileOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Attack a DEQ classifier inside an eps-ball and report robust accuracy.

    Every adversarial example is re-scored by a fresh forward solve from zeros to a tight
    tolerance; perturbed images stay in the pixel box [0, 1]."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        budgets = parse_eps_list(eps)
        opts = AttackCommandConfig(
            iterations=iterations,
            memory=memory,
            alpha=alpha,
            alpha_final=alpha_final,
            candidates=candidates,
            pgd_steps=pgd_steps,
            pgd_step_size=pgd_step_size,
            restarts=restarts,
            batch_size=batch_size,
            max_images=max_images,
            examples=examples,
        )
        if norm == Norm.linf and any(e > 1 for e in budgets):
            raise UsageError(f"--eps {eps}: an L∞ budget above 1 covers the whole pixel box [0, 1]")
        if save_examples is not None and save_examples.exists() and not save_examples.is_dir():
            raise UsageError(f"--save-examples {save_examples} exists and is not a folder")
        from jiio_cli.tasks.adversarial.attacks import JIIOAttackConfig, PGDConfig, ThreatModel
        from jiio_cli.tasks.adversarial.data import load_attack_set
        from jiio_cli.tasks.adversarial.sweep import run_attack_sweep
        from jiio_cli.tasks.loading import default_checkpoint, load_model

        dev = common.torch_device
        torch.manual_seed(common.seed)
        path = checkpoint if checkpoint is not None else default_checkpoint("classifier")
        model, _ = load_model(path, {"adversarial"}, "classifier", dev)
        images, labels, notes = load_attack_set(model.config, data, opts.max_images)
        images, labels = images.to(dev), labels.to(dev)

        methods = ["jiio", "pgd"] if method == Method.both else [method.value]
        err = Console(stderr=True)
        with batch_progress(not common.json_output) as progress:
            result = run_attack_sweep(
                model,
                images,
                labels,
                [ThreatModel(norm.value, e) for e in budgets],
                methods,  # type: ignore[arg-type]
                JIIOAttackConfig(
                    iterations=opts.iterations,
                    memory=opts.memory,
                    alpha=opts.alpha,
                    alpha_final=opts.alpha_final,
                    loss=loss.value,  # type: ignore[arg-type]
                    solver=solver.value,  # type: ignore[arg-type]
                    candidates=opts.candidates,
                    graph=compile_graph,
                ),
                PGDConfig(
                    steps=opts.pgd_steps,
                    step_size=opts.pgd_step_size,
                    restarts=opts.restarts,
                    loss=pgd_loss.value,  # type: ignore[arg-type]
                ),
                opts.batch_size,
                common.seed,
                keep_examples=opts.examples if save_examples is not None else 0,
                progress=progress,
            )
        warnings = list(notes)
        if result.clean_unconverged > 0:
            warnings.append(
                f"WARNING: the classifier's forward solve did not converge on "
                f"{100 * result.clean_unconverged:.1f}% of the clean inputs; robustness "
                "numbers from unconverged DEQ solves are unreliable"
            )
        written: list[str] = []
        if save_examples is not None:
            from jiio_cli.tasks.adversarial.examples import save_attack_examples

            written = save_attack_examples(save_examples, images, labels, result)
        document = {
            "checkpoint": str(path),
            "images": int(images.shape[0]),
            "clean_accuracy": result.rows[0].clean_accuracy if result.rows else None,
            "clean_unconverged": result.clean_unconverged,
            "rows": [row.as_dict() for row in result.rows],
            "warnings": warnings,
            "examples": written,
            "device": str(dev),
            "seed": common.seed,
        }
        for line in warnings:
            err.print(line, style="bold red" if line.startswith("WARNING") else None)
        if common.json_output:
            print_json(document)
        else:
            print_table(
                [row.as_dict() for row in result.rows],
                title=f"jiio attack ({images.shape[0]} images, clean accuracy "
                f"{document['clean_accuracy']:.4f})",
                columns=_COLUMNS,
            )
