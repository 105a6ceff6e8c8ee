"""Data-parallel training across processes started by ``torchrun``: a few explicit collectives.

Every rank holds a full copy of the model. The global batch of step s (the same sample
indices whatever the world size) is cut into contiguous shards, one per rank; each rank
runs the JIIO inner solve and the backward pass on its shard only, and the ranks then
all-reduce the parameter gradients so that every rank applies the same Adam update.

Why the inner solve stays local. The inner problem of a batch is a sum of independent
per-sample problems: ℓ(z, x) is a sum over samples, Anderson solves one least-squares
system per sample and freezes each sample at its own tolerance. Sample i's (z*, x*, μ*)
is therefore the same whether it is solved beside its shard or beside the whole global
batch; nothing about the inner solve needs to cross ranks. The training loss is a mean
over the global batch of B samples, L = (1/B) Σ_i L_i, so with rank r holding n_r
samples and computing the shard mean L_r = (1/n_r) Σ_{i∈r} L_i,

    ∇_θ L = Σ_r (n_r / B) ∇_θ L_r,

which is what :func:`all_reduce_gradients` forms: each rank scales its gradient by
n_r / B and the ranks sum. Only parameter gradients (and a handful of scalars for the
step decision and the metrics) cross ranks.

Why not ``DistributedDataParallel``. DDP all-reduces from autograd hooks that fire once
per parameter during one backward pass. A DEQ step calls its cell hundreds of times
under ``no_grad`` and then backpropagates through implicit-differentiation hooks that
run their own adjoint solves; one flat all-reduce after ``backward()`` is simpler,
cannot be confused by those calls, and is easy to check against a single process.
"""

from __future__ import annotations

import atexit
import os
import pickle
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from jiio_cli.errors import JiioError, UsageError

__all__ = [
    "BatchShard",
    "DistributedContext",
    "all_gather_objects",
    "all_reduce_gradients",
    "broadcast_module",
    "broadcast_object",
    "current_context",
    "launched_by_torchrun",
    "picklable_error",
    "shard_bounds",
    "start_distributed",
]

T = TypeVar("T")

# Held-out evaluation runs on rank 0 while the others wait in a collective: allow for it.
_COLLECTIVE_TIMEOUT = timedelta(minutes=60)
_LEAVE_TIMEOUT = timedelta(minutes=1)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: ``rank`` of ``world_size`` processes (1: no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher using its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"environment variable {name}={text!r} is not a whole number") from None


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise UsageError(
            f"--device {device} names one GPU, but torchrun starts one process per GPU; "
            "use --device cuda (each process takes the GPU of its local rank) and choose "
            "GPUs with CUDA_VISIBLE_DEVICES"
        )
    if local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
            "start at most that many processes per node"
        )
    return torch.device("cuda", local_rank)


def start_distributed(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join torchrun's process group (NCCL on GPUs, Gloo on CPUs); a no-op otherwise.

    Args:
        device: the device the user asked for; ``cuda`` becomes ``cuda:<local rank>``.

    Returns:
        (context, the device this process trains on).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        context = current_context()
        return context, device
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistributedContext(), device
    context = DistributedContext(
        rank=_env_int("RANK", 0), world_size=world, local_rank=_env_int("LOCAL_RANK", 0)
    )
    device = _rank_device(device, context.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=_COLLECTIVE_TIMEOUT)
    except (RuntimeError, ValueError) as exc:
        raise JiioError(
            f"cannot join the torchrun process group with {backend} ({exc}); "
            "check MASTER_ADDR / MASTER_PORT and that every node can reach them"
        ) from exc
    atexit.register(_leave)
    return context, device


def _leave() -> None:
    """Leave the process group at exit, all ranks together.

    A rank that tears its Gloo group down while another is still using the group's
    connections can abort in C++ ("terminate called without an active exception"),
    failing a run that had finished; a barrier first lines the ranks up. A rank whose
    partner is gone (it failed, torchrun is stopping the job) gives up after a minute.
    """
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=_LEAVE_TIMEOUT)
        else:
            dist.barrier()
    except RuntimeError:
        pass  # the other ranks are gone; tearing down alone is all that is left
    dist.destroy_process_group()


def current_context() -> DistributedContext:
    """The context of an already initialised process group, or the single-process one."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK", 0),
    )


def shard_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of a batch of ``size`` rows that ``rank`` takes.

    Contiguous and balanced: shard sizes differ by at most one, and concatenating the
    shards in rank order gives the batch back.
    """
    return rank * size // world_size, (rank + 1) * size // world_size


@dataclass(frozen=True)
class BatchShard:
    """One rank's part of a global batch.

    Attributes:
        global_indices: sample indices of the whole global batch (B,).
        start, stop: this rank's rows of it.
        generator: seeded from (seed, step), identical on every rank: draw per-sample
            randomness for the *global* batch from it and slice ``[start:stop]``, so
            noise and masks do not depend on the world size.
        local_generator: for draws made for this shard only (they depend on the world
            size); the same object as ``generator`` in a single process.
    """

    global_indices: Tensor
    start: int
    stop: int
    generator: torch.Generator
    local_generator: torch.Generator

    @property
    def indices(self) -> Tensor:
        """This rank's sample indices (stop − start,)."""
        return self.global_indices[self.start : self.stop]

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def global_size(self) -> int:
        return int(self.global_indices.shape[0])

    @property
    def weight(self) -> float:
        """n_r / B: the share of this rank's mean in the global mean."""
        return self.size / max(self.global_size, 1)


def all_reduce_gradients(params: list[nn.Parameter], weight: float) -> None:
    """Replace every ``p.grad`` by Σ_ranks weight_r · grad_r, in one flat all-reduce.

    A parameter without a gradient on some rank contributes zeros there, so every rank
    sends the same buffer layout; one without a gradient on every rank keeps ``None``
    (so Adam skips it, as it would in a single process).
    """
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = [1.0 if p.grad is not None else 0.0 for p in params]
    flat = torch.cat([g.reshape(-1) * weight for g in grads] + [grads[0].new_tensor(present)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    anyone_has = (flat[-len(params) :] > 0).tolist()  # one host copy, not one per parameter
    offset = 0
    for p, has_grad in zip(params, anyone_has, strict=True):
        count = p.numel()
        if has_grad:
            p.grad = flat[offset : offset + count].view_as(p).clone()
        else:
            p.grad = None
        offset += count


def all_gather_objects(value: T) -> list[T]:
    """Every rank's ``value`` (picklable), in rank order."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: T | None) -> T:
    """Rank 0's ``value`` on every rank (others pass anything, e.g. None).

    An exception passed as the value is re-raised on every rank, so a mistake found by
    rank 0 alone (e.g. a missing checkpoint) stops all ranks with the same message.
    """
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    received = box[0]
    if isinstance(received, BaseException):
        raise received
    return received


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module``, in place."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def picklable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a JiioError carrying its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return JiioError(str(exc))
    return exc
