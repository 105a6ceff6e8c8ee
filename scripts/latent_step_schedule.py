"""α_x schedules of reconstruction's latent step, on the reconstruct bench's problem.

Usage: python scripts/latent_step_schedule.py SCHEDULE [SCHEDULE ...] [--budgets 160,200,240]
       [--offset 0] [--corruption inpaint|denoise] [--per-row]

Each SCHEDULE is ``A`` (a constant α_x = A) or ``A0:A:K`` (α_x = A0 for the first K
iterations, then A, with Anderson's history cleared at the switch: what
``reconstruction_settings`` does with ``alpha_x_start=A0, start_iterations=K``). Every
other setting is the bench's (memory 10, x weight 10, the checkpoint's latent weight).

The batch is the 64 held-out digits from ``--offset`` (0: the bench's own batch) with the
bench's corruption draw. Each budget runs from scratch and prints the mean objective at
the returned x, with z solved there afresh. ``--per-row`` also prints, for the last
budget, the mean over the images of each image's lowest objective across the schedules
given (an oracle that picks a schedule per image, not a method) and how often each
schedule was that image's best.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from torch import Tensor

from jiio_cli.bench.reconstruct import ReconstructBenchConfig, jiio_settings, speed_batch
from jiio_cli.engine import SolverConfig, StepSchedule, forward_solve, jiio_solve
from jiio_cli.tasks.inverse.problems import (
    reconstruction_alpha_x,
    reconstruction_problem,
    trained_latent_weight,
)
from jiio_cli.tasks.loading import load_decoder

SOLVE = SolverConfig(memory=5, max_iter=30, tol=1e-4)


def parse_schedule(text: str) -> float | StepSchedule:
    """``A`` as a constant α_x, ``A0:A:K`` as A0 for K iterations then A (a constant A
    when there is no start phase, as :func:`reconstruction_alpha_x` decides)."""
    parts = text.split(":")
    if len(parts) == 1:
        return float(parts[0])
    if len(parts) != 3:
        raise SystemExit(f"schedule {text!r}: expected A or A0:A:K")
    return reconstruction_alpha_x(float(parts[1]), float(parts[0]), int(parts[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("schedules", nargs="+")
    parser.add_argument("--budgets", default="160,200,240")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--corruption", choices=("inpaint", "denoise"), default="inpaint")
    parser.add_argument("--per-row", action="store_true")
    args = parser.parse_args()
    decoder, ckpt = load_decoder(None, torch.device("cpu"))
    cfg = ReconstructBenchConfig(latent_weight=trained_latent_weight(ckpt.training_config))
    _, observed, known = speed_batch(cfg.batch_size, args.corruption, offset=args.offset)
    problem = reconstruction_problem(decoder, observed, known, cfg.latent_weight, folded=True)
    budgets = [int(b) for b in args.budgets.split(",")]

    def objectives(schedule: str, budget: int) -> Tensor:
        jiio = dataclasses.replace(
            jiio_settings(cfg, budget).jiio, alpha_x=parse_schedule(schedule)
        )
        x = jiio_solve(problem, jiio).x
        with torch.no_grad():
            z = forward_solve(problem.cell, x, problem.z0, SOLVE).z
            return problem.objective(z, x)

    last: dict[str, Tensor] = {}
    for schedule in args.schedules:
        cells = []
        for budget in budgets:
            values = objectives(schedule, budget)
            cells.append(f"{budget}: {float(values.mean()):.4f}")
            last[schedule] = values
        print(f"{schedule:>16}  " + "  ".join(cells), flush=True)
    if args.per_row:
        stack = torch.stack([torch.nan_to_num(v, nan=float("inf")) for v in last.values()])
        best = stack.min(dim=0)
        counts = torch.bincount(best.indices, minlength=len(last)).tolist()
        print(f"per-image best of the schedules at {budgets[-1]}: {float(best.values.mean()):.4f}")
        print(
            "  images whose best it was: "
            + ", ".join(f"{s} {c}" for s, c in zip(last, counts, strict=True))
        )


if __name__ == "__main__":
    main()
