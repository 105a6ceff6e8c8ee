"""How often `jiio reconstruct`'s solve converges on held-out digits, with and without
the extra rounds for the images that have not converged.

Usage: python scripts/reconstruct_convergence.py [--images 200] [--extra-rounds 0,2]

Solves the first ``--images`` held-out MNIST-5k digits with the shipped decoder, with
the settings ``jiio reconstruct`` builds from its defaults (300 iterations, tolerance
1e-2, the checkpoint's latent weight), under three corruptions: a random 10×10 hole,
Gaussian noise σ = 0.2, and none (the projection onto the model). For each setting of
``--extra-rounds`` it prints the share of converged images, the most iterations an
image took, the mean objective and the seconds the whole batch took.
"""

from __future__ import annotations

import argparse
import time

import torch

from jiio_cli.data import load_mnist5k
from jiio_cli.tasks.inverse.corruption import Corruption, corrupt
from jiio_cli.tasks.inverse.problems import (
    reconstruct,
    reconstruction_settings,
    trained_latent_weight,
)
from jiio_cli.tasks.loading import load_decoder
from jiio_cli.training import derived_generator

CORRUPTIONS = {
    "hole 10x10": Corruption(hole_size=10),
    "noise 0.2": Corruption(sigma=0.2),
    "none": Corruption(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--extra-rounds", default="0,2")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    decoder, checkpoint = load_decoder(None, torch.device("cpu"))
    latent_weight = trained_latent_weight(checkpoint.training_config)
    clean = load_mnist5k("heldout")[0][: args.images]
    print("corruption   extra rounds   converged   most iterations   mean objective   seconds")
    for name, corruption in CORRUPTIONS.items():
        observed, known = corrupt(clean, corruption, derived_generator(0, 77))
        for rounds in (int(r) for r in args.extra_rounds.split(",")):
            # The settings of `jiio reconstruct` at its defaults.
            settings = reconstruction_settings(
                300,
                latent_weight=latent_weight,
                refine_tol=1e-2,
                tol=1e-2,
                refine_iterations=50,
                extra_rounds=rounds,
            )
            started = time.perf_counter()
            _, result = reconstruct(decoder, observed * known, known, settings)
            seconds = time.perf_counter() - started
            converged = result.converged.float().mean().item()
            print(
                f"{name:12s} {rounds:12d}   {100 * converged:8.1f} %"
                f"   {int(result.iterations.max()):15d}   {result.objective.mean().item():14.4f}"
                f"   {seconds:7.1f}"
            )


if __name__ == "__main__":
    main()
