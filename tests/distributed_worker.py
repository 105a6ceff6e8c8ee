"""What each rank does in tests/tasks/test_distributed.py, run by torchrun as a worker script.

Also imported by the test itself, which runs the same functions in one process (world
size 1) to get the references.

Usage: distributed_worker.py DATA.npz WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from jiio_cli.distributed import BatchShard, all_reduce_gradients, shard_bounds, start_distributed
from jiio_cli.models import DecoderConfig, DEQDecoder
from jiio_cli.tasks.inverse import training as inverse_training
from jiio_cli.tasks.inverse.corruption import Corruption
from jiio_cli.tasks.inverse.problems import training_loss
from jiio_cli.tasks.inverse.training import (
    InverseTrainConfig,
    corrupt_shard,
    inference_settings,
    load_training_data,
    train_inverse,
)
from jiio_cli.training import TrainConfig, TrainRun, derived_generator

CUT_AFTER = 5
"""Steps after which the interrupted runs stop (mid-epoch: 6 batches per epoch)."""


def make_spec(data: Path) -> InverseTrainConfig:
    """A tiny denoising run: 40 images, global batch 7 (uneven shards and a last batch of 5).

    The Jacobian penalty is off: its Hutchinson probes are drawn per rank (see docs/scaling.md),
    everything else a step draws is the same for any number of ranks.
    """
    return InverseTrainConfig(
        task="denoise",
        corruption=Corruption(sigma=0.1, hole_size=3),
        model=DecoderConfig(latent_dim=8, channels=8, image_size=12, half_resolution=True),
        loop=TrainConfig(epochs=2, batch_size=7, lr=3e-3, seed=11),
        inner_iterations=6,
        inner_memory=5,
        jacobian_weight=0.0,
        data=str(data),
        eval_size=4,
        density_images=0,
    )


def batch_gradient(spec: InverseTrainConfig, rank: int, world_size: int) -> torch.Tensor:
    """Flat parameter gradient of the mean loss over the first global batch.

    Each rank computes its shard's mean loss and gradient; with several ranks the
    gradients are all-reduced weighted by shard size.
    """
    torch.manual_seed(spec.loop.seed)
    decoder = DEQDecoder(spec.model)
    train, _ = load_training_data(spec)
    indices = torch.arange(spec.loop.batch_size)
    start, stop = shard_bounds(len(indices), rank, world_size)
    generator = derived_generator(spec.loop.seed, 2, 0)
    shard = BatchShard(indices, start, stop, generator, generator)
    clean = train[shard.indices]
    observed, known = corrupt_shard(clean, spec.corruption, shard)
    result = training_loss(
        decoder, clean, observed, known, spec.task, inference_settings(spec), jacobian_weight=0.0
    )
    result.loss.backward()
    params = list(decoder.parameters())
    if world_size > 1:
        all_reduce_gradients(params, shard.weight)
    return torch.cat([p.grad.reshape(-1) for p in params])


class RecordedDecoder(DEQDecoder):
    """A DEQDecoder that remembers its latest instance, so a rank can report its weights."""

    latest: DEQDecoder | None = None

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__(config)
        RecordedDecoder.latest = self


def main(data: Path, work: Path) -> None:
    torch.set_num_threads(1)
    context, device = start_distributed(torch.device("cpu"))
    spec = make_spec(data)
    grad = batch_gradient(spec, context.rank, context.world_size)
    if context.is_main:
        torch.save(grad, work / "grad2.pt")
    # Every rank's own copy of the trained model, not only the one rank 0 saves.
    inverse_training.DEQDecoder = RecordedDecoder  # type: ignore[misc]
    train_inverse(spec, device, TrainRun(work / "full2"))
    assert RecordedDecoder.latest is not None
    params = torch.cat([p.detach().reshape(-1) for p in RecordedDecoder.latest.parameters()])
    torch.save(params, work / f"params-rank{context.rank}.pt")
    train_inverse(spec, device, TrainRun(work / "cut2", stop_after_steps=CUT_AFTER))
    # Started by one process, ends on two.
    train_inverse(spec, device, TrainRun(work / "cut1", resume=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
