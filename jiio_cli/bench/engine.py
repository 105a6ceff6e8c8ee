"""The solver's own cost: f, f + VJP and one JIIO iteration on a conv DEQ cell.

The overhead ratio (JIIO iteration time over f + VJP time) shows what the augmented
state and Anderson's history cost on top of the network itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from jiio_cli.bench.timing import time_call
from jiio_cli.engine import InputProblem, JIIOConfig, SolverConfig, jiio_solve, lagrangian_grads
from jiio_cli.models import ConvDEQCell, ImageInjection

__all__ = ["EngineTiming", "time_engine"]


@dataclass
class EngineTiming:
    """Seconds per call at one problem size."""

    batch: int
    channels: int
    size: int
    memory: int
    f_seconds: float
    f_vjp_seconds: float
    jiio_iteration_seconds: float

    @property
    def overhead_ratio(self) -> float:
        return self.jiio_iteration_seconds / self.f_vjp_seconds

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "overhead_ratio": self.overhead_ratio}


def time_engine(
    batch: int,
    channels: int,
    size: int,
    memory: int,
    device: torch.device,
    iterations: int = 30,
    repeat: int = 5,
    seed: int = 0,
) -> EngineTiming:
    """Time f, f + VJP and one JIIO iteration for an image-injected conv DEQ cell.

    x is an image (B, 3, size, size) optimised inside the pixel box; z has ``channels``
    channels at full resolution; the objective is a squared error on z's mean channel.
    """
    torch.manual_seed(seed)
    cell = ConvDEQCell(channels, ImageInjection(3, channels, stride=1, image_size=size))
    cell = cell.to(device)
    x = torch.rand(batch, 3, size, size, device=device)
    z = torch.randn(batch, channels, size, size, device=device) * 0.1
    mu = torch.randn_like(z) * 0.1
    target = torch.rand(batch, size, size, device=device)

    def objective(zz: torch.Tensor, _xx: torch.Tensor) -> torch.Tensor:
        return 0.5 * (zz.mean(dim=1) - target).pow(2).flatten(1).sum(dim=1)

    with torch.no_grad():
        f_time = time_call(lambda: cell(z, x), device, repeat=repeat * 4)
    fv_time = time_call(lambda: lagrangian_grads(cell, objective, z, x, mu), device, repeat * 4)

    problem = InputProblem(cell, objective, torch.zeros_like(z), x)
    # tol far below reach: every run does exactly ``iterations`` iterations.
    cfg = JIIOConfig(
        alpha_x=0.01,
        solver=SolverConfig(memory=memory, tol=1e-30, max_iter=iterations, check_every=10**6),
        refine=SolverConfig(memory=2, tol=1e-30, max_iter=1, check_every=10**6),
    )
    short = JIIOConfig(
        alpha_x=0.01,
        solver=SolverConfig(memory=memory, tol=1e-30, max_iter=2, check_every=10**6),
        refine=cfg.refine,
    )
    long_t = time_call(lambda: jiio_solve(problem, cfg), device, repeat=repeat, warmup=1)
    short_t = time_call(lambda: jiio_solve(problem, short), device, repeat=repeat, warmup=1)
    # The difference removes set-up and the final refinement from the per-iteration cost.
    per_iter = (long_t - short_t) / (iterations - 2)
    return EngineTiming(batch, channels, size, memory, f_time, fv_time, per_iter)
