"""Conditioning of the reconstruction bench's latent problem: the Gauss–Newton spectrum in x.

Usage: python scripts/latent_conditioning.py [--iterations 400] [--images 64] [--step 1e-4]

For the reconstruct bench's batch (the first held-out digits, a random 10×10 hole, seed 0)
the latent is solved by JIIO (the bench's settings, ``--iterations``), and at that x* and
at the start x = 0 the Gauss–Newton matrix of the objective in x is formed per image,

    G = Jᵀ diag(m) J + λ I,      J = ∂ head(z*(x)) / ∂x   (pixels × latent),

with m the mask of known pixels and λ the latent weight (the objective is
½‖m ⊙ (head(z*(x)) − y)‖² + ½ λ ‖x‖²). J is taken by central differences of the decoded
image in float64, each column from two forward solves to 1e-11 warm-started at z*(x).
Printed per point: the median over images of the smallest, median and largest eigenvalue
of G, of its condition number, and of how many eigenvalues lie below 1 % of the largest;
then the median condition number of G preconditioned by the batch's mean G (the best one
fixed matrix could do for the batch). A plain gradient step of size α converges in a
direction of eigenvalue e at the rate 1 − α e.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor

from jiio_cli.bench.reconstruct import ReconstructBenchConfig, jiio_settings, speed_batch
from jiio_cli.engine import SolverConfig, forward_solve, jiio_solve
from jiio_cli.tasks.inverse.problems import reconstruction_problem
from jiio_cli.tasks.loading import load_decoder

TIGHT = SolverConfig(memory=10, max_iter=200, tol=1e-11)


def decoded_jacobian(decoder, cell, z0: Tensor, x: Tensor, step: float) -> Tensor:
    """∂ head(z*(x)) / ∂x by central differences, (B, pixels, D), float64."""
    z_at = forward_solve(cell, x, z0, TIGHT).z
    columns = []
    for i in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, i] = step
        plus = decoder.head(forward_solve(cell, x + e, z_at, TIGHT).z)
        minus = decoder.head(forward_solve(cell, x - e, z_at, TIGHT).z)
        columns.append(((plus - minus) / (2 * step)).flatten(1))
    return torch.stack(columns, dim=2)


def spectrum_report(name: str, gram: Tensor) -> None:
    eig = torch.linalg.eigvalsh(gram)
    kappa = eig[:, -1] / eig[:, 0]
    small = (eig < 1e-2 * eig[:, -1:]).sum(dim=1).double()
    mid = eig.shape[1] // 2
    print(
        f"{name}: eigenvalues min {eig[:, 0].median():.4g}, median {eig[:, mid].median():.4g}, "
        f"max {eig[:, -1].median():.4g}; condition number {kappa.median():.4g}; "
        f"{small.median():.0f} of {eig.shape[1]} below 1 % of the largest"
    )
    factor_inv = torch.linalg.inv(torch.linalg.cholesky(gram.mean(dim=0)))
    pre = torch.linalg.eigvalsh(factor_inv @ gram @ factor_inv.T)
    print(
        f"{name}: preconditioned by the batch's mean G: condition number "
        f"{(pre[:, -1] / pre[:, 0]).median():.4g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--step", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device("cpu")
    decoder, _ = load_decoder(None, device)
    cfg = ReconstructBenchConfig(batch_size=args.images)
    _, observed, known = speed_batch(cfg.batch_size)
    problem = reconstruction_problem(decoder, observed, known, cfg.latent_weight, folded=True)
    result = jiio_solve(problem, jiio_settings(cfg, args.iterations).jiio)
    print(f"JIIO, {args.iterations} iterations: objective {float(result.objective.mean()):.4f}")

    decoder = decoder.double()
    exact = reconstruction_problem(decoder, observed.double(), known.double(), cfg.latent_weight)
    mask = known.double().flatten(1)
    eye = torch.eye(result.x.shape[1], dtype=torch.float64)
    x_star = result.x.double()
    for name, x in (("at x*", x_star), ("at x = 0", torch.zeros_like(x_star))):
        jac = decoded_jacobian(decoder, exact.cell, exact.z0, x, args.step)
        gram = torch.einsum("bpi,bp,bpj->bij", jac, mask, jac) + cfg.latent_weight * eye
        spectrum_report(name, gram)


if __name__ == "__main__":
    main()
