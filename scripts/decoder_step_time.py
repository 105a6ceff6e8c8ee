"""Time of one decoder training step, to compare architectures before training them.

Usage: python scripts/decoder_step_time.py [--width 32] [--latent-dim 32]
       [--state-resolution half|full] [--batch-size 64] [--steps 4]

Runs ``--steps`` steps of what ``jiio train --task inpaint --hole-size 10 --sigma 0:0.3``
does per batch (JIIO latent inference with the training budget, the adjoint solve, the
Jacobian penalty, backward and an Adam update) on the first MNIST-5k training digits,
with a fresh decoder of the given shape, and prints each step's wall-clock seconds and
their median over all but the first (which pays one-off allocation costs). Threads are
PyTorch's default; set OMP_NUM_THREADS to compare at a fixed count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jiio_cli.data import load_mnist5k
from jiio_cli.models import DecoderConfig, DEQDecoder
from jiio_cli.tasks.inverse.corruption import Corruption, corrupt
from jiio_cli.tasks.inverse.problems import training_loss
from jiio_cli.tasks.inverse.training import InverseTrainSpec, inference_settings
from jiio_cli.training import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--state-resolution", choices=("half", "full"), default="half")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first is not counted)")
    torch.manual_seed(0)
    config = DecoderConfig(
        latent_dim=args.latent_dim,
        channels=args.width,
        half_resolution=args.state_resolution == "half",
    )
    decoder = DEQDecoder(config)
    spec = InverseTrainSpec(
        task="inpaint",
        corruption=Corruption(sigma=(0.0, 0.3), hole_size=10),
        model=config,
        loop=TrainConfig(epochs=1, batch_size=args.batch_size),
    )
    settings = inference_settings(spec)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=spec.loop.lr)
    train = load_mnist5k("train")[0]
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for step in range(args.steps):
        rows = torch.arange(step * args.batch_size, (step + 1) * args.batch_size) % len(train)
        clean = train[rows]
        observed, known = corrupt(clean, spec.corruption, generator)
        start = time.perf_counter()
        result = training_loss(
            decoder,
            clean,
            observed,
            known,
            "inpaint",
            settings,
            jacobian_weight=spec.jacobian_weight,
            generator=generator,
        )
        optimiser.zero_grad()
        result.loss.backward()
        optimiser.step()
        seconds.append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in decoder.parameters())
    side = config.state_size
    print(f"state {config.channels}×{side}×{side}, {parameters} parameters")
    print("step seconds:", ", ".join(f"{s:.2f}" for s in seconds))
    print(f"median after the first: {statistics.median(seconds[1:]):.2f} s")


if __name__ == "__main__":
    main()
