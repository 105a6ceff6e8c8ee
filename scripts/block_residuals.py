"""How far each block of JIIO's state is from its fixed point along the reconstruct bench's solve.

Usage: python scripts/block_residuals.py [--iterations 180] [--at 10,30,60,90,120,150,179]

Runs JIIO with ``jiio bench --task reconstruct``'s settings on its batch (the first 64
held-out digits, a random 10×10 hole, seed 0) and prints, at the chosen iterations, the
median over the batch of the three block residuals the loop judges convergence by
(``augmented_residuals``: ‖f(z) − z‖ / ‖f(z)‖, ‖u_z − μ‖ / ‖u_z‖, ‖x⁺ − x‖ / ‖x⁺‖), and
the median norms of z and μ in the returned solution (the scales the blocks have in
Anderson's least squares).
"""

from __future__ import annotations

import argparse

import torch

import jiio_cli.engine.jiio as jiio_module
from jiio_cli.bench.reconstruct import ReconstructBenchConfig, jiio_settings, speed_observations
from jiio_cli.data import load_mnist5k
from jiio_cli.tasks.inverse.problems import reconstruct
from jiio_cli.tasks.loading import load_decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=180)
    parser.add_argument("--at", default="10,30,60,90,120,150,179")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    decoder, _ = load_decoder(None, torch.device("cpu"))
    cfg = ReconstructBenchConfig()
    clean = load_mnist5k("heldout")[0][: cfg.batch_size]
    observed, known = speed_observations(clean)

    recorded: list[torch.Tensor] = []
    residuals = jiio_module.augmented_residuals

    def recording(*a: object, **k: object) -> torch.Tensor:
        out = residuals(*a, **k)  # type: ignore[arg-type]
        recorded.append(out.clone())
        return out

    jiio_module.augmented_residuals = recording  # the loop looks it up at each call
    _, result = reconstruct(decoder, observed, known, jiio_settings(cfg, args.iterations))
    jiio_module.augmented_residuals = residuals
    trace = torch.stack(recorded)  # (iterations, B, 3)
    print("iteration   z block    mu block   x block   (medians over the batch)")
    for k in (int(a) for a in args.at.split(",")):
        if k < trace.shape[0]:
            z, mu, x = trace[k].median(dim=0).values.tolist()
            print(f"{k:9d}   {z:.2e}   {mu:.2e}   {x:.2e}")
    z_norm = result.z.flatten(1).norm(dim=1).median().item()
    mu_norm = result.mu.flatten(1).norm(dim=1).median().item()
    objective = result.objective.mean().item()
    print(f"objective {objective:.4f}; median ‖z‖ {z_norm:.2f}, ‖μ‖ {mu_norm:.3f}")


if __name__ == "__main__":
    main()
