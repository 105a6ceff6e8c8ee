"""Fit the latent Gaussian mixture and the range error of a decoder checkpoint.

Usage: python scripts/fit_density.py CHECKPOINT [--images 2000] [--components 10]
The codes of the first N MNIST-5k training digits are inferred by JIIO (all pixels
known); the mixture goes into the checkpoint under ``density.``, and the decoder's range
error τ², fitted on the first 200 of those digits observed with noise σ = 0.2
(:mod:`jiio_cli.tasks.inverse.range_error`), into its metadata. The file is rewritten atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.data import load_mnist5k
from jiio_cli.tasks.inverse.range_error import stored_range_error
from jiio_cli.tasks.inverse.sampling import attach_density


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=150)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, _ = load_mnist5k("train")
    attach_density(args.checkpoint, images[: args.images], device, args.components, args.iterations)
    variance = stored_range_error(load_checkpoint(args.checkpoint).extra)
    print(
        f"stored a {args.components}-component mixture fitted on {args.images} codes "
        f"and the range error tau^2 = {variance:.5f}"
    )


if __name__ == "__main__":
    main()
