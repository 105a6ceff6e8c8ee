"""Training a DEQ decoder for ``generate`` / ``denoise`` / ``inpaint`` end to end.

Wires the pieces together: data (MNIST-5k by default), corruption, latent inference
(JIIO or naive), the training loss of :mod:`jiio_cli.tasks.inverse.problems`, held-out PSNR, and
the shared training loop. No printing here: progress goes through a callback.

Under ``torchrun`` each rank trains on its shard of every global batch; the noise and
masks of a batch are drawn for the whole global batch and sliced, so a run's
corruptions do not depend on the number of ranks. Large image folders are streamed
from disk (:mod:`jiio_cli.data.streaming`) instead of loaded whole.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from jiio_cli.data import list_image_files, load_image_dataset, load_mnist5k
from jiio_cli.data.augment import Augmentation, augment
from jiio_cli.data.streaming import (
    IN_MEMORY_LIMIT_BYTES,
    StreamingImageFolder,
    default_workers,
    folder_bytes,
)
from jiio_cli.distributed import current_context
from jiio_cli.engine import JIIOConfig, NaiveConfig, SolverConfig, StepSchedule
from jiio_cli.metrics import psnr
from jiio_cli.models import DecoderConfig, DEQDecoder
from jiio_cli.models.precision import check_precision
from jiio_cli.tasks.inverse.corruption import Corruption, corrupt
from jiio_cli.tasks.inverse.domain import DOMAIN_KEY, training_domain
from jiio_cli.tasks.inverse.problems import InferenceConfig, infer_latents, training_loss
from jiio_cli.tasks.inverse.sampling import attach_density_to_checkpoints
from jiio_cli.training import (
    BatchShard,
    StepOutcome,
    TrainConfig,
    TrainRun,
    TrainState,
    checkpoint_paths,
    derived_generator,
    run_training,
)

__all__ = [
    "InverseTrainConfig",
    "augment_shard",
    "corrupt_shard",
    "default_corruption",
    "evaluate_psnr",
    "inference_settings",
    "load_training_data",
    "shard_noise_and_mask",
    "train_inverse",
]

InverseTask = Literal["generate", "denoise", "inpaint"]


@dataclass(frozen=True)
class InverseTrainConfig:
    """Everything that defines a run of ``jiio train --task generate|denoise|inpaint``."""

    task: InverseTask
    corruption: Corruption
    model: DecoderConfig
    loop: TrainConfig
    augmentation: Augmentation = field(default_factory=Augmentation)
    inner: Literal["jiio", "naive"] = "jiio"
    inner_iterations: int = 40
    inner_memory: int = 20
    alpha_x: float = 0.05
    alpha_x_final: float = 0.02
    latent_weight: float = 1e-3
    jacobian_weight: float = 0.01
    naive_steps: int = 20
    naive_lr: float = 0.1
    data: str | None = None
    max_train: int | None = None
    eval_size: int = 500
    density_images: int = 2000
    density_components: int = 10
    stream_data: bool | None = None
    data_workers: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["corruption"]["sigma"] = list(self.corruption.sigma_range)
        return out


def default_corruption(task: InverseTask) -> Corruption:
    """The observation model each task trains on unless the user overrides it."""
    if task == "denoise":
        return Corruption(sigma=0.2)
    if task == "inpaint":
        return Corruption(hole_size=10)
    return Corruption()


def inference_settings(spec: InverseTrainConfig, *, evaluation: bool = False) -> InferenceConfig:
    """Latent-inference settings of a run (evaluation solves get a larger budget)."""
    iterations = spec.inner_iterations * (2 if evaluation else 1)
    schedule = StepSchedule(spec.alpha_x, spec.alpha_x_final)
    jiio = JIIOConfig(
        alpha_x=schedule,
        solver=SolverConfig(memory=spec.inner_memory, max_iter=iterations, tol=1e-4),
        # Training uses a fixed budget; a short refinement keeps z* consistent with x*.
        refine=SolverConfig(memory=5, max_iter=30 if evaluation else 12, tol=1e-4),
    )
    inner_solve = SolverConfig(memory=5, max_iter=30, tol=1e-4)
    naive = NaiveConfig(
        method="adam",
        steps=spec.naive_steps,
        lr=spec.naive_lr,
        forward=inner_solve,
        adjoint=inner_solve,
    )
    method = "jiio" if evaluation else spec.inner
    # Held-out numbers are always measured in float32, whatever the training precision.
    precision = "fp32" if evaluation else spec.loop.precision
    return InferenceConfig(
        method=method,
        latent_weight=spec.latent_weight,
        jiio=jiio,
        naive=naive,
        precision=precision,  # type: ignore[arg-type]
    )


TrainImages = Tensor | StreamingImageFolder
"""Training images (N, C, S, S): in memory, or read from disk on indexing."""


def _streams(spec: InverseTrainConfig, files: list[Path]) -> bool:
    if spec.stream_data is not None:
        return spec.stream_data
    size, channels = spec.model.image_size, spec.model.image_channels
    return folder_bytes(len(files), size, channels) > IN_MEMORY_LIMIT_BYTES


def load_training_data(spec: InverseTrainConfig) -> tuple[TrainImages, Tensor]:
    """(train, held-out) images (N, C, S, S) in [0, 1].

    The training images of a large folder (``spec.stream_data``, or by default when the
    decoded set would exceed :data:`IN_MEMORY_LIMIT_BYTES`) come back as a
    :class:`StreamingImageFolder`; the held-out images are always loaded.
    """
    size, channels = spec.model.image_size, spec.model.image_channels
    folder = spec.data is not None and Path(spec.data).is_dir()
    files = list_image_files(Path(spec.data))[0] if folder else []
    if folder and files and _streams(spec, files):
        assert spec.data is not None
        workers = spec.data_workers
        if workers is None:
            workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        images = StreamingImageFolder(spec.data, size, channels, workers, files)
        # The same fixed 90/10 split in file order as for loaded folders.
        cut = max(1, int(0.9 * len(images)))
        stream = images.subset(0, cut)
        held = images.subset(cut, len(images)) if cut < len(images) else stream.subset(cut - 1, cut)
        heldout = held[: spec.eval_size]
        if spec.max_train is not None:
            stream = stream.subset(0, spec.max_train)
        return stream, heldout
    if spec.data is None:
        train, _ = load_mnist5k("train")
        heldout, _ = load_mnist5k("heldout")
        if (size, channels) != (28, 1):
            train = _adapt(train, size, channels)
            heldout = _adapt(heldout, size, channels)
    else:
        images, _ = load_image_dataset(spec.data, image_size=size, channels=channels)
        # A fixed 90/10 split of a user's data, in file order.
        cut = max(1, int(0.9 * images.shape[0]))
        train, heldout = images[:cut], images[cut:]
        if heldout.shape[0] == 0:
            heldout = train[-1:]
    if spec.max_train is not None:
        train = train[: spec.max_train]
    return train, heldout[: spec.eval_size]


def _adapt(images: Tensor, size: int, channels: int) -> Tensor:
    out = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True
    )
    return out.expand(-1, channels, -1, -1).contiguous() if channels != 1 else out


def shard_noise_and_mask(
    clean: Tensor, corruption: Corruption, shard: BatchShard
) -> tuple[Tensor, Tensor]:
    """This rank's rows of a global batch's noise (σ ε) ⊙ m and mask m.

    ``corrupt`` is applied to zeros of the global batch's shape with the batch's shared
    generator, giving (σ ε) ⊙ m and m for every sample; this rank keeps its rows.

    Args:
        clean: this rank's images (n, C, H, W), n = shard.size (for shape, device, dtype).
        corruption: the observation model.
        shard: where these rows sit in the global batch.

    Returns:
        (noise (n, C, H, W), known (n, 1, H, W)).
    """
    zeros = torch.zeros(shard.global_size, *clean.shape[1:])
    noise, known = corrupt(zeros, corruption, shard.generator)
    rows = slice(shard.start, shard.stop)
    return noise[rows].to(clean.device, clean.dtype), known[rows].to(clean.device, clean.dtype)


def corrupt_shard(
    clean: Tensor, corruption: Corruption, shard: BatchShard
) -> tuple[Tensor, Tensor]:
    """Observe this rank's rows of a global batch, with draws made for the whole batch.

    Since m ∈ {0, 1}, u ⊙ m + (σ ε) ⊙ m equals (u + σ ε) ⊙ m exactly, so the
    observations are bit for bit those of a single process corrupting the whole batch.

    Returns:
        (observed (n, C, H, W), known (n, 1, H, W)).
    """
    noise, known = shard_noise_and_mask(clean, corruption, shard)
    return clean * known + noise, known


def augment_shard(clean: Tensor, augmentation: Augmentation, shard: BatchShard) -> Tensor:
    """This rank's rows of a global batch's augmented images (draws for the whole batch).

    The random offsets or fields are drawn for every sample of the global batch from the
    shared generator and this rank's rows applied, so the augmented images do not depend
    on the world size. ``none`` returns ``clean`` and draws nothing.
    """
    if augmentation.is_identity:
        return clean
    if shard.size == shard.global_size:
        return augment(clean, augmentation, shard.generator)
    # Other ranks' rows are zeros here: each image is augmented on its own, so they only
    # stand in to make the same draws as one process does.
    full = clean.new_zeros(shard.global_size, *clean.shape[1:])
    full[shard.start : shard.stop] = clean
    return augment(full, augmentation, shard.generator)[shard.start : shard.stop]


def evaluate_psnr(
    decoder: DEQDecoder,
    clean: Tensor,
    corruption: Corruption,
    settings: InferenceConfig,
    seed: int,
    batch_size: int = 128,
) -> dict[str, float]:
    """Held-out PSNR (dB, [0, 1] images) of reconstructions from fixed corruptions."""
    generator = derived_generator(seed, 3)
    values, converged = [], []
    for start in range(0, clean.shape[0], batch_size):
        batch = clean[start : start + batch_size]
        observed, known = corrupt(batch, corruption, generator)
        _, result = infer_latents(decoder, observed, known, settings)
        with torch.no_grad():
            recon = decoder.head(result.z).clamp(0, 1)
        values.append(psnr(recon, batch))
        converged.append(result.converged.float())
    return {
        "heldout_psnr": float(torch.cat(values).mean()),
        "heldout_converged": float(torch.cat(converged).mean()),
    }


def _training_step(
    decoder: DEQDecoder,
    train: TrainImages,
    spec: InverseTrainConfig,
    settings: InferenceConfig,
    device: torch.device,
) -> Callable[[BatchShard, int], StepOutcome]:
    """The loop's step: corrupt (and augment) this rank's images of the global batch, solve
    for the latents and return the training loss with the inner solve's health."""

    def step_fn(shard: BatchShard, _step: int) -> StepOutcome:
        indices = shard.indices
        clean = train[indices.to(device) if isinstance(train, Tensor) else indices].to(device)
        noise, known = shard_noise_and_mask(clean, spec.corruption, shard)
        # Drawn after the corruption, so runs without augmentation keep their draws.
        clean = augment_shard(clean, spec.augmentation, shard)
        observed = clean * known + noise
        result = training_loss(
            decoder,
            clean,
            observed,
            known,
            spec.task,
            settings,
            jacobian_weight=spec.jacobian_weight,
            generator=shard.local_generator,
        )
        inner = result.inner
        ok = not bool(inner.failed.any())
        metrics = {
            "mse": float(result.mse),
            "objective": float(inner.objective.mean()),
            "residual": float(torch.maximum(inner.residual_z, inner.residual_x).mean()),
        }
        return StepOutcome(result.loss, metrics, ok)

    return step_fn


def train_inverse(
    spec: InverseTrainConfig,
    device: torch.device,
    run: TrainRun,
) -> TrainState:
    """Train (or resume) a decoder; checkpoints land in ``run.out``.

    Under torchrun (an initialised process group) every rank calls this with its own
    ``device``; rank 0 alone writes checkpoints and fits the latent density.
    """
    check_precision(spec.loop.precision, device)
    context = current_context()
    torch.manual_seed(spec.loop.seed)
    decoder = DEQDecoder(spec.model).to(device)
    train, heldout = load_training_data(spec)
    if isinstance(train, Tensor):
        train = train.to(device)
    heldout = heldout.to(device)
    settings = inference_settings(spec)
    eval_settings = inference_settings(spec, evaluation=True)

    step_fn = _training_step(decoder, train, spec, settings, device)

    def eval_fn() -> dict[str, float]:
        return evaluate_psnr(decoder, heldout, spec.corruption, eval_settings, spec.loop.seed)

    # What the decoder will know: checked against users' images before each solve.
    data_name = "MNIST digits" if spec.data is None else f"images from {Path(spec.data).name}"
    meta = {
        "task": spec.task,
        "model_kind": "decoder",
        "model_config": spec.model.to_dict(),
        "training_config": spec.to_json(),
        "extra": {DOMAIN_KEY: training_domain(data_name, heldout.cpu()).to_metadata()},
    }
    state = run_training(
        model=decoder,
        train_size=len(train),
        shard_step_fn=step_fn,
        eval_fn=eval_fn,
        config=spec.loop,
        run=run,
        name=f"{spec.task}",
        meta=meta,
        best_key="heldout_psnr",
    )
    if isinstance(train, StreamingImageFolder):
        train.close()
    if context.is_main and state.epoch >= spec.loop.epochs and spec.density_images > 0:
        _fit_latent_prior(train, spec, device, run.out)
    return state


def _fit_latent_prior(
    train: TrainImages,
    spec: InverseTrainConfig,
    device: torch.device,
    out: Path,
) -> None:
    """A generative model must be able to generate: fit the latent prior on the first
    ``density_images`` training images and attach it to both checkpoints of the run (one
    fit when they hold the same decoder, as when the last epoch was the best)."""
    images = train[: spec.density_images].to(device)
    paths = [path for path in checkpoint_paths(out, spec.task) if path.exists()]
    attach_density_to_checkpoints(
        paths, images, device, spec.density_components, iterations=2 * spec.inner_iterations
    )
