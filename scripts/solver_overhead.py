"""The solver's own cost per iteration, apart from the model's, on the reconstruct bench.

Usage: python scripts/solver_overhead.py [--repeat 5]

Prints median milliseconds (of ``--repeat`` runs) of:

- one iteration of ``fixed_point_solve`` (Anderson, memory 10) on a state of the JIIO
  reconstruct bench's size (batch 64, N = 12,608: z, x and μ) whose map is a cheap
  affine one, so the time is the loop's: residual, best-iterate bookkeeping, history,
  Gram row, mixing; with a three-block residual like JIIO's;
- one JIIO iteration on the bench's batch (the first held-out digits, a random 10×10
  hole, seed 0; the bench's settings), as the time of 120 iterations minus that of 40,
  over 80 (so the final refinement cancels);
- ``lagrangian_grads`` at the start point (f, the objective and one VJP: the model's
  part of a JIIO iteration), and the difference, the solver's part.

It uses only functions that every version of the engine has, so the same file times
two commits side by side (``PYTHONPATH=<checkout> python scripts/solver_overhead.py``).
Threads are PyTorch's default; set OMP_NUM_THREADS to fix them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from jiio_cli.bench.reconstruct import ReconstructBenchConfig, jiio_settings, speed_observations
from jiio_cli.data import load_mnist5k
from jiio_cli.engine import SolverConfig, fixed_point_solve, jiio_solve, lagrangian_grads
from jiio_cli.tasks.inverse.problems import reconstruction_problem
from jiio_cli.tasks.loading import load_decoder


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device("cpu")
    decoder, _ = load_decoder(None, device)
    cfg = ReconstructBenchConfig()
    clean = load_mnist5k("heldout")[0][: cfg.batch_size]
    observed, known = speed_observations(clean)
    problem = reconstruction_problem(decoder, observed, known, cfg.latent_weight)

    batch, n, steps = cfg.batch_size, 12_608, 200
    gen = torch.Generator().manual_seed(0)
    shift = 0.05 * torch.randn(n, generator=gen)
    start = torch.randn(batch, n, generator=gen)

    def affine(s: torch.Tensor, _k: torch.Tensor) -> torch.Tensor:
        return 0.9 * s + shift

    # Engines from 2026-12-05 on hand the residual g(s) − s; older ones call it with two.
    def three_blocks(
        s: torch.Tensor, gs: torch.Tensor, diff: torch.Tensor | None = None
    ) -> torch.Tensor:
        diff = gs - s if diff is None else diff
        d = diff.norm(dim=1) / (gs.norm(dim=1) + 1e-5)
        return torch.stack([d, d, d], dim=1)

    loop_cfg = SolverConfig(memory=cfg.memory, max_iter=steps, tol=1e-30)
    loop = median_seconds(
        lambda: fixed_point_solve(affine, start, loop_cfg, three_blocks), args.repeat
    )

    def jiio(budget: int) -> Callable[[], object]:
        return lambda: jiio_solve(problem, jiio_settings(cfg, budget).jiio)

    per_iteration = (
        median_seconds(jiio(120), args.repeat) - median_seconds(jiio(40), args.repeat)
    ) / 80
    z = problem.z0
    mu = 0.01 * torch.randn(z.shape, generator=gen)
    model = median_seconds(
        lambda: lagrangian_grads(problem.cell, problem.objective, z, problem.x0, mu),
        10 * args.repeat,
    )
    print(f"{torch.get_num_threads()} thread(s), medians of {args.repeat}")
    print(f"solver loop, affine map, per iteration   {1000 * loop / steps:7.2f} ms")
    print(f"JIIO iteration on the bench's batch      {1000 * per_iteration:7.2f} ms")
    print(f"lagrangian_grads (f, objective, VJP)     {1000 * model:7.2f} ms")
    print(f"solver's part of a JIIO iteration        {1000 * (per_iteration - model):7.2f} ms")


if __name__ == "__main__":
    main()
