"""Training-step time and held-out PSNR in fp32 against bf16 (and fp16), for BENCHMARKS.md.

Two measurements on the same model, data, seed and device, side by side in one process:

1. Step time: one training step of ``jiio train --task denoise`` (JIIO inner solve,
   implicit backward, Jacobian penalty, Adam) on a fixed batch, medians of ``--steps``
   timed steps after warm-up, precisions interleaved so that drifts in machine load hit
   all of them alike.
2. A short training run per precision (MNIST-5k, ``--epochs``, ``--max-train``), with
   the held-out PSNR measured in float32 at the end.

Prints one JSON line per measurement. Usage (GPU):

    python scripts/precision_bench.py --device cuda --precisions fp32,bf16

Smoke test on a CPU: ``--device cpu --batch-size 8 --steps 2 --epochs 1 --max-train 32``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from jiio_cli.data import load_mnist5k
from jiio_cli.models import DecoderConfig, DEQDecoder
from jiio_cli.models.precision import use_strict_fp32
from jiio_cli.tasks.inverse.corruption import Corruption, corrupt
from jiio_cli.tasks.inverse.problems import training_loss
from jiio_cli.tasks.inverse.training import InverseTrainConfig, inference_settings, train_inverse
from jiio_cli.training import TrainConfig, TrainRun


def _spec(args: argparse.Namespace, precision: str) -> InverseTrainConfig:
    return InverseTrainConfig(
        task="denoise",
        corruption=Corruption(sigma=0.2),
        model=DecoderConfig(
            latent_dim=args.latent_dim,
            channels=args.width,
            image_size=28,
            half_resolution=True,
        ),
        loop=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            precision=precision,
        ),
        max_train=args.max_train,
        eval_size=args.eval_size,
        density_images=0,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Median seconds of one training step per precision, on one model and batch."""
    torch.manual_seed(args.seed)
    decoder = DEQDecoder(_spec(args, "fp32").model).to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    images, _ = load_mnist5k("train")
    clean = images[: args.batch_size].to(device)
    observed, known = corrupt(clean, Corruption(sigma=0.2), torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {p: [] for p in args.precisions}
    scalers = {p: torch.amp.GradScaler(device.type, enabled=p == "fp16") for p in args.precisions}
    state = {k: v.clone() for k, v in decoder.state_dict().items()}
    for repeat in range(args.warmup + args.steps):
        for precision in args.precisions:
            decoder.load_state_dict(state)  # every precision steps from the same weights
            settings = inference_settings(_spec(args, precision))
            _sync(device)
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            result = training_loss(
                decoder,
                clean,
                observed,
                known,
                "denoise",
                settings,
                jacobian_weight=0.01,
                generator=torch.Generator().manual_seed(repeat),
            )
            scaler = scalers[precision]
            scaler.scale(result.loss).backward()
            scaler.step(optimizer)
            scaler.update()
            _sync(device)
            if repeat >= args.warmup:
                times[precision].append(time.perf_counter() - started)
    return {p: statistics.median(t) for p, t in times.items()}


def short_run(args: argparse.Namespace, device: torch.device, precision: str) -> dict[str, float]:
    """Wall-clock and final held-out PSNR of a short training run."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        state = train_inverse(_spec(args, precision), device, TrainRun(Path(folder) / "run"))
        _sync(device)
        seconds = time.perf_counter() - started
    evals = [h for h in state.history if "heldout_psnr" in h]
    return {"seconds": seconds, "heldout_psnr": evals[-1]["heldout_psnr"], "steps": state.step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-train", type=int, default=1280)
    parser.add_argument("--eval-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-run", action="store_true", help="Only time the step.")
    args = parser.parse_args()
    args.precisions = args.precisions.split(",")
    device = torch.device(args.device)
    if device.type == "cuda":
        use_strict_fp32()  # fp32 means IEEE float32, as on the command line
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    common = {"device": card, "torch": torch.__version__, "batch_size": args.batch_size}
    common["width"] = args.width
    for precision, seconds in step_times(args, device).items():
        print(json.dumps({**common, "measure": "step", "precision": precision, "seconds": seconds}))
    if args.skip_run:
        return
    for precision in args.precisions:
        run = short_run(args, device, precision)
        print(json.dumps({**common, "measure": "run", "precision": precision, **run}))


if __name__ == "__main__":
    main()
