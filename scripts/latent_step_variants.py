"""Variants of the latent's update in reconstruction, against plain JIIO, on the bench's batch.

Usage: python scripts/latent_step_variants.py VARIANT [--budgets 80,160] [--alpha 0.02]
       [--lr 0.1] [--every 2] [--decay constant|cosine] [--momentum 0.5]
       [--start-weight 0.03] [--keep best|last]

VARIANT is one of:

- ``plain``: JIIO as the reconstruct bench runs it (memory 10, x weight 10); with
  ``--keep last`` it returns its last iterate instead of its lowest-residual one (also
  for the variants that run ``jiio_solve``).
- ``covariance`` / ``inverse-covariance``: JIIO on u with x = L u, L the Cholesky factor
  of the stored density's overall latent covariance Σ (or of Σ⁻¹), scaled to mean
  eigenvalue 1: a fixed preconditioner LLᵀ of the x step. The problem is unchanged.
- ``mean-start``: JIIO started at the density's mean instead of x = 0.
- ``adam-x``: one f and one VJP per iteration as in JIIO, z and μ by damped steps
  (0.8, 0.6), x by Adam (cosine-decayed ``--lr``) on the current Lagrangian gradient.
- ``anderson-adam``: Anderson (memory 10) on [z; μ] alone, x outside it by Adam
  (``--lr``, ``--decay``) on the current Lagrangian gradient every ``--every`` map
  evaluations.
- ``momentum``: JIIO with a heavy-ball x block: the state gains a velocity v,
  v⁺ = β v − α ∇, x⁺ = x + v⁺ (β = ``--momentum``), both weighted as x; the fixed
  points are unchanged (v = 0).
- ``restart``: plain JIIO in chunks of ``--every`` iterations, each chunk started
  afresh (empty Anderson history) from the previous chunk's last z, x and μ (refined).
- ``continuation``: the first ``--every`` iterations on the problem with the larger
  latent weight ``--start-weight`` (better conditioned), the rest on the bench's own
  problem from there (z, x and μ carried over, fresh history).
- ``nested``: Anderson (memory 10) on x alone, x ↦ x − α ∇ with the exact gradient (a
  forward and an adjoint solve to 1e-4 at every x, the forward warm-started).

The batch is the reconstruct bench's (the first 64 held-out digits, a random 10×10 hole,
seed 0); each budget runs from scratch and prints the objective at the returned x, with
z solved there afresh. Threads are PyTorch's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
from torch import Tensor

from jiio_cli.bench.reconstruct import ReconstructBenchConfig, jiio_settings, speed_batch
from jiio_cli.density import GaussianMixture
from jiio_cli.engine import (
    InputProblem,
    SolverConfig,
    StateLayout,
    adjoint_solve,
    fixed_point_solve,
    forward_solve,
    jiio_solve,
    lagrangian_grads,
)
from jiio_cli.tasks.inverse.problems import reconstruction_problem
from jiio_cli.tasks.inverse.sampling import DENSITY_PREFIX
from jiio_cli.tasks.loading import load_decoder

VARIANTS = (
    "plain",
    "covariance",
    "inverse-covariance",
    "mean-start",
    "adam-x",
    "anderson-adam",
    "momentum",
    "restart",
    "continuation",
    "nested",
)
SOLVE = SolverConfig(memory=5, max_iter=30, tol=1e-4)


def latent_moments(tensors: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) of the stored Gaussian mixture as a whole."""
    mixture = GaussianMixture.from_tensors(tensors, DENSITY_PREFIX)
    w, means, covs = mixture.weights.float(), mixture.means.float(), mixture.covariances.float()
    mean = (w[:, None] * means).sum(0)
    d = means - mean
    return mean, (w[:, None, None] * (covs + d[:, :, None] * d[:, None, :])).sum(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--budgets", default="80,160")
    parser.add_argument("--alpha", type=float, default=0.02)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--momentum", type=float, default=0.5)
    parser.add_argument("--start-weight", type=float, default=0.03)
    parser.add_argument("--keep", choices=("best", "last"), default="best")
    parser.add_argument("--decay", choices=("constant", "cosine"), default="constant")
    args = parser.parse_args()
    device = torch.device("cpu")
    decoder, ckpt = load_decoder(None, device)
    cfg = ReconstructBenchConfig()
    _, observed, known = speed_batch(cfg.batch_size)
    problem = reconstruction_problem(decoder, observed, known, cfg.latent_weight, folded=True)
    cell, objective = problem.cell, problem.objective
    mean, cov = latent_moments(ckpt.tensors)

    def objective_at(x: Tensor) -> float:
        with torch.no_grad():
            z = forward_solve(cell, x, problem.z0, SOLVE).z
            return float(objective(z, x).mean())

    def run_jiio(budget: int) -> Tensor:
        jiio = dataclasses.replace(jiio_settings(cfg, budget).jiio, alpha_x=args.alpha)
        jiio = dataclasses.replace(jiio, solver=dataclasses.replace(jiio.solver, keep=args.keep))
        if args.variant in ("covariance", "inverse-covariance"):
            target = cov if args.variant == "covariance" else torch.linalg.inv(cov)
            factor = torch.linalg.cholesky(target / (torch.trace(target) / target.shape[0]))
            reparam = InputProblem(
                lambda z, u: cell(z, u @ factor.T),
                lambda z, u: objective(z, u @ factor.T),
                problem.z0,
                torch.zeros_like(problem.x0),
            )
            with torch.no_grad():
                return jiio_solve(reparam, jiio).x @ factor.T
        x0 = mean.expand_as(problem.x0).clone() if args.variant == "mean-start" else problem.x0
        start = InputProblem(cell, objective, problem.z0, x0)
        with torch.no_grad():
            return jiio_solve(start, jiio).x

    def run_adam_x(budget: int) -> Tensor:
        z, x = problem.z0.clone(), problem.x0.clone()
        mu = torch.zeros_like(z)
        m1, m2 = torch.zeros_like(x), torch.zeros_like(x)
        for k in range(budget):
            fz, _, gz, gx = lagrangian_grads(cell, objective, z, x, mu)
            z, mu = z + 0.8 * (fz - z), mu + 0.6 * (gz - mu)
            m1.mul_(0.9).add_(gx, alpha=0.1)
            m2.mul_(0.999).addcmul_(gx, gx, value=0.001)
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * k / budget))
            step = (m1 / (1 - 0.9 ** (k + 1))) / ((m2 / (1 - 0.999 ** (k + 1))).sqrt() + 1e-8)
            x = x - lr * step
        return x

    def run_anderson_adam(budget: int) -> Tensor:
        x = problem.x0.clone()
        m1, m2 = torch.zeros_like(x), torch.zeros_like(x)
        nz = problem.z0[0].numel()
        calls = [0, 0]

        def zmu_map(s: Tensor, _k: Tensor) -> Tensor:
            nonlocal x
            z = s[:, :nz].view_as(problem.z0)
            mu = s[:, nz:].view_as(problem.z0)
            fz, _, gz, gx = lagrangian_grads(cell, objective, z, x, mu)
            calls[0] += 1
            if calls[0] % args.every == 0:
                t = calls[1]
                calls[1] += 1
                m1.mul_(0.9).add_(gx, alpha=0.1)
                m2.mul_(0.999).addcmul_(gx, gx, value=0.001)
                steps = budget // args.every
                lr = args.lr
                if args.decay == "cosine":
                    lr = lr * 0.5 * (1 + math.cos(math.pi * t / steps))
                step = (m1 / (1 - 0.9 ** (t + 1))) / ((m2 / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
                x = x - lr * step
            b = s.shape[0]
            return torch.cat(
                [(z + 0.8 * (fz - z)).reshape(b, -1), (mu + 0.6 * (gz - mu)).reshape(b, -1)], 1
            )

        s0 = torch.zeros(problem.z0.shape[0], 2 * nz)
        s0[:, :nz] = problem.z0.reshape(problem.z0.shape[0], -1)
        config = SolverConfig(memory=10, max_iter=budget, tol=1e-12)
        with torch.no_grad():
            fixed_point_solve(zmu_map, s0, config)
        return x

    def run_momentum(budget: int) -> Tensor:
        w, beta = cfg.x_weight, args.momentum
        z0, x0 = problem.z0, problem.x0
        layout = StateLayout.of([z0, x0, x0, z0])

        def heavy_ball_map(s: Tensor, _k: Tensor) -> Tensor:
            z, xw, vw, mu = layout.unpack(s)
            x, v = xw / w, vw / w
            fz, _, gz, gx = lagrangian_grads(cell, objective, z, x, mu)
            v_new = beta * v - args.alpha * gx
            return layout.pack(
                [z + 0.8 * (fz - z), w * (x + v_new), w * v_new, mu + 0.6 * (gz - mu)]
            )

        s0 = layout.pack([z0, x0, torch.zeros_like(x0), torch.zeros_like(z0)])
        config = SolverConfig(memory=cfg.memory, max_iter=budget, tol=1e-12)
        with torch.no_grad():
            state = fixed_point_solve(heavy_ball_map, s0, config).state
        return layout.unpack(state)[1] / w

    def run_chunks(budget: int) -> Tensor:
        if args.variant == "continuation":
            first = min(args.every, budget)
            chunks = [(first, args.start_weight), (budget - first, cfg.latent_weight)]
        else:
            sizes = [args.every] * (budget // args.every) + [budget % args.every]
            chunks = [(size, cfg.latent_weight) for size in sizes]
        z, x, mu = problem.z0, problem.x0, None
        for size, weight in chunks:
            if size == 0:
                continue
            stage = reconstruction_problem(decoder, observed, known, weight, folded=True)
            jiio = dataclasses.replace(jiio_settings(cfg, size).jiio, alpha_x=args.alpha)
            # The last iterate of each chunk: its lowest-residual one is often its start.
            jiio = dataclasses.replace(jiio, solver=dataclasses.replace(jiio.solver, keep="last"))
            with torch.no_grad():
                result = jiio_solve(InputProblem(cell, stage.objective, z, x), jiio, mu0=mu)
            z, x, mu = result.z, result.x, result.mu
        return x

    def run_nested(budget: int) -> Tensor:
        warm = [problem.z0]

        def gradient_step(x: Tensor, _k: Tensor) -> Tensor:
            z = forward_solve(cell, x, warm[0], SOLVE).z
            warm[0] = z
            _, _, gz, _ = lagrangian_grads(cell, objective, z, x, torch.zeros_like(z))
            mu = adjoint_solve(cell, z, x, gz, None, SOLVE).mu
            _, _, _, gx = lagrangian_grads(cell, objective, z, x, mu)
            return x - args.alpha * gx

        config = SolverConfig(memory=10, max_iter=budget, tol=1e-9)
        with torch.no_grad():
            return fixed_point_solve(gradient_step, problem.x0.clone(), config).state

    run = {
        "adam-x": run_adam_x,
        "anderson-adam": run_anderson_adam,
        "momentum": run_momentum,
        "nested": run_nested,
        "restart": run_chunks,
        "continuation": run_chunks,
    }.get(args.variant, run_jiio)
    for budget in (int(b) for b in args.budgets.split(",")):
        start = time.perf_counter()
        x = run(budget)
        seconds = time.perf_counter() - start
        value = objective_at(x)
        print(f"{args.variant}, {budget} iterations: objective {value:.3f} ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
