"""How well a decoder represents clean digits: the ceiling of its reconstructions.

Usage: python scripts/clean_fit.py [CHECKPOINT] [--images 64] [--iterations 300,800]
       [--adam-steps 200] [--sigma 0.2]

The latent codes of the first N held-out MNIST-5k digits are fitted by JIIO with every
pixel observed (the reconstruct bench's solver settings), and the PSNR of the mean
squared error against those digits is printed for each iteration budget. No corruption
is involved, so no image this decoder decodes from a corrupted observation can be
expected to do better than this figure (the observed pixels mixed back in by the
range-error model can). With ``--adam-steps N`` the same codes are also fitted by the
other optimiser, Adam on the latent (lr 0.1 with cosine decay, a forward and an adjoint
solve to 1e-5 per step), which tells a ceiling of the decoder from a limit of JIIO's.

With ``--sigma S`` the digits are observed with the quality table's noise draw instead
and the denoising PSNR is printed: of the decoded image, and, when the checkpoint
carries a range error τ², of the posterior image that the bench and ``jiio reconstruct``
report (:mod:`jiio_cli.tasks.inverse.range_error`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from jiio_cli.bench.reconstruct import (
    ReconstructBenchConfig,
    dataset_psnr,
    jiio_settings,
    quality_observations,
)
from jiio_cli.data import load_mnist5k
from jiio_cli.engine import NaiveConfig, SolverConfig
from jiio_cli.tasks.inverse.corruption import Corruption
from jiio_cli.tasks.inverse.problems import InferenceConfig, reconstruct
from jiio_cli.tasks.inverse.range_error import posterior_image, stored_range_error
from jiio_cli.tasks.loading import default_checkpoint, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path, nargs="?", default=None)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--iterations", default="300,800")
    parser.add_argument("--adam-steps", type=int, default=0)
    parser.add_argument("--sigma", type=float, default=0.0)
    args = parser.parse_args()
    if args.sigma < 0:
        parser.error("--sigma must be >= 0")
    device = torch.device("cpu")
    path = args.checkpoint or default_checkpoint("decoder")
    decoder, ckpt = load_model(path, {"generate", "denoise", "inpaint"}, "decoder", device)
    variance = stored_range_error(ckpt.extra)
    clean = load_mnist5k("heldout")[0][: args.images]
    if args.sigma > 0:
        observed, known = quality_observations(clean, Corruption(sigma=args.sigma), seed=0)
        label = f"denoising (sigma {args.sigma:g}) PSNR"
    else:
        observed, known = clean, torch.ones(clean.shape[0], 1, *clean.shape[2:])
        label = "clean-fit PSNR"
    for budget in (int(b) for b in args.iterations.split(",")):
        images, _ = reconstruct(
            decoder, observed, known, jiio_settings(ReconstructBenchConfig(), budget)
        )
        line = f"{budget} iterations: {label} {dataset_psnr(images, clean):.2f} dB"
        if args.sigma > 0 and variance is not None:
            mixed = posterior_image(images, observed, known, args.sigma, variance)
            line += (
                f", with the range error (tau^2 {variance:.5f}) {dataset_psnr(mixed, clean):.2f} dB"
            )
        print(line, flush=True)
    if args.adam_steps > 0:
        solve = SolverConfig(memory=5, max_iter=40, tol=1e-5)
        naive = NaiveConfig(
            method="adam",
            steps=args.adam_steps,
            lr=0.1,
            lr_decay="cosine",
            forward=solve,
            adjoint=solve,
        )
        settings = InferenceConfig(
            method="naive", latent_weight=ReconstructBenchConfig().latent_weight, naive=naive
        )
        images, _ = reconstruct(decoder, observed, known, settings)
        psnr = dataset_psnr(images, clean)
        print(f"Adam, {args.adam_steps} steps: {label} {psnr:.2f} dB")


if __name__ == "__main__":
    main()
