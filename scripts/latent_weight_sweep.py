"""The reconstruct bench's time-to-equal-objective ratio at other latent weights λ.

Usage: python scripts/latent_weight_sweep.py LAMBDA [LAMBDA ...]

The objective is ½‖m ⊙ (head(z*(x)) − y)‖² + ½ λ ‖x‖²; λ bounds the Gauss–Newton
matrix's smallest eigenvalue from below (see ``scripts/latent_conditioning.py``), so a
larger λ makes the latent problem better conditioned, and it is also another problem
(a stronger prior towards x = 0). For each λ this runs the bench's comparison
(``time_to_equal_objective``, the bench's defaults, the shipped decoder, its batch) and
the PSNR of JIIO's reconstructions after 300 iterations, on the whole image and on the
hole alone, on the same 64 digits. Threads are PyTorch's default.
"""

from __future__ import annotations

import argparse

import torch

from jiio_cli.bench.reconstruct import (
    ReconstructBenchConfig,
    jiio_settings,
    speed_batch,
    time_to_equal_objective,
)
from jiio_cli.tasks.inverse.problems import reconstruct
from jiio_cli.tasks.loading import load_decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("weights", nargs="+", type=float)
    args = parser.parse_args()
    device = torch.device("cpu")
    decoder, _ = load_decoder(None, device)
    for weight in args.weights:
        cfg = ReconstructBenchConfig(latent_weight=weight)
        clean, observed, known = speed_batch(cfg.batch_size)
        speed = time_to_equal_objective(decoder, observed, known, cfg)
        reached = next(
            (r for r in speed["jiio"]["runs"] if r["objective"] <= speed["target_objective"]),
            None,
        )
        images, _ = reconstruct(decoder, observed, known, jiio_settings(cfg, 300))
        error = (images - clean).pow(2).flatten(1)
        hole = (1 - known).flatten(1)
        psnr_all = (-10 * torch.log10(error.mean(dim=1))).mean()
        psnr_hole = (-10 * torch.log10((error * hole).sum(1) / hole.sum(1))).mean()
        budget = f"{reached['iterations']} iterations" if reached else "not reached"
        ratio = f"{speed['ratio']:.2f}x" if speed["ratio"] else "none"
        print(
            f"lambda {weight:g}: naive {speed['naive']['seconds']:.2f} s -> "
            f"{speed['target_objective']:.3f}; JIIO {budget}; ratio {ratio}; "
            f"PSNR after 300 iterations {psnr_all:.2f} dB (hole {psnr_hole:.2f} dB)"
        )


if __name__ == "__main__":
    main()
