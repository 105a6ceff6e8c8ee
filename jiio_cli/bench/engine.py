"""The solver's own cost: f, f + VJP and one JIIO iteration on a conv DEQ cell.

The overhead ratio (JIIO iteration time over f + VJP time) shows what the augmented
state and Anderson's history cost on top of the network itself.

Memory: JIIO keeps an Anderson history of m stacked states s = [z; x; μ] (n = 2·dim z +
dim x floats) twice (the iterates f(s_i) and their residuals, or with a bfloat16 history
their differences, at 2 bytes a number, plus the newest pair in float32), plus an m×m
float64 Gram matrix, per sample; the naive method keeps the same kind of history over z
(or μ) alone, one solve at a time, with its own memory (5 here). Both are reported per sample from
these counts (the history dominates what each method adds on top of the network), and on
a GPU also as measured peak allocation per sample.

Every time is the median of repeated measurements, reported with its relative spread
(interquartile range over median, :func:`~jiio_cli.bench.timing.relative_spread`): a shared or
throttling machine shows up as a large spread instead of a silently wrong number.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from jiio_cli.bench.timing import LARGE_SPREAD, relative_spread, time_samples
from jiio_cli.engine import (
    InputOptResult,
    InputProblem,
    JIIOConfig,
    NaiveConfig,
    SolverConfig,
    jiio_solve,
    lagrangian_grads,
    naive_solve,
)
from jiio_cli.models import ConvDEQCell, ImageInjection
from jiio_cli.models.precision import Precision, autocast_cell

__all__ = ["EngineTiming", "time_engine"]

_SPREAD_FIELDS = (
    ("f_spread", "f"),
    ("f_vjp_spread", "f + VJP"),
    ("jiio_iteration_spread", "the JIIO iteration"),
)


@dataclass
class EngineTiming:
    """Seconds per call at one problem size, solver memory and execution mode.

    ``*_seconds`` are medians over ``repeats`` measurements, ``*_spread`` their relative
    spread (interquartile range over median); ``repeats`` is the number of paired runs
    behind the iteration time (f and f + VJP are timed four times as often).
    """

    batch: int
    channels: int
    size: int
    memory: int
    mode: str
    precision: str
    history: str
    f_seconds: float
    f_vjp_seconds: float
    jiio_iteration_seconds: float
    jiio_history_mib_per_sample: float
    naive_history_mib_per_sample: float
    jiio_peak_mib_per_sample: float | None = None
    naive_peak_mib_per_sample: float | None = None
    graph_failure: str | None = None
    repeats: int = 1
    f_spread: float = 0.0
    f_vjp_spread: float = 0.0
    jiio_iteration_spread: float = 0.0

    @property
    def noisy(self) -> list[str]:
        """What was timed with a spread above :data:`LARGE_SPREAD`, in words."""
        return [name for key, name in _SPREAD_FIELDS if getattr(self, key) > LARGE_SPREAD]

    def spread_note(self) -> str | None:
        """One sentence when a timing of this row is noisy, else None."""
        noisy = self.noisy
        if not noisy:
            return None
        worst = max(getattr(self, key) for key, _ in _SPREAD_FIELDS)
        return (
            f"batch {self.batch}, {self.channels} channels, side {self.size}, memory "
            f"{self.memory} ({self.mode}, history {self.history}): the times of "
            f"{' and '.join(noisy)} spread by up to {100 * worst:.0f}% of their median between "
            "repeats (interquartile range); the machine was busy or changing speed, so read this "
            "row as rough and rerun it on a quiet machine"
        )

    @property
    def overhead_ratio(self) -> float:
        return self.jiio_iteration_seconds / self.f_vjp_seconds

    @property
    def iteration_seconds_per_sample(self) -> float:
        return self.jiio_iteration_seconds / self.batch

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            **asdict(self),
            "overhead_ratio": self.overhead_ratio,
            "iteration_seconds_per_sample": self.iteration_seconds_per_sample,
            "noisy": self.noisy,
        }


def time_engine(
    batch: int,
    channels: int,
    size: int,
    memory: int,
    device: torch.device,
    iterations: int = 30,
    repeat: int = 5,
    seed: int = 0,
    graph: bool = False,
    precision: Precision = "fp32",
    history: Literal["fp32", "bf16"] = "fp32",
) -> EngineTiming:
    """Time f, f + VJP and one JIIO iteration for an image-injected conv DEQ cell.

    x is an image (B, 3, size, size) optimised inside the pixel box; z has ``channels``
    channels at full resolution; the objective is a squared error on z's mean channel.

    The iteration time is the marginal cost of an iteration, (t(2T) − t(T)) / T for runs
    of 2T and T iterations (T = ``iterations``), which removes set-up, the final
    refinement and, with ``graph``, the warm-up and capture. f and f + VJP are timed
    eagerly (what a plain PyTorch loop over this cell costs), in ``precision``;
    ``history`` is the precision of Anderson's history.
    """
    torch.manual_seed(seed)
    module = ConvDEQCell(channels, ImageInjection(3, channels, stride=1, image_size=size))
    module = module.to(device)
    cell = autocast_cell(module, precision, device)
    x = torch.rand(batch, 3, size, size, device=device)
    z = torch.randn(batch, channels, size, size, device=device) * 0.1
    mu = torch.randn_like(z) * 0.1
    target = torch.rand(batch, size, size, device=device)

    def objective(zz: torch.Tensor, _xx: torch.Tensor) -> torch.Tensor:
        return 0.5 * (zz.mean(dim=1) - target).pow(2).flatten(1).sum(dim=1)

    with torch.no_grad():
        f_times = time_samples(lambda: cell(z, x), device, repeat=repeat * 4)
    fv_times = time_samples(lambda: lagrangian_grads(cell, objective, z, x, mu), device, repeat * 4)

    problem = InputProblem(cell, objective, torch.zeros_like(z), x)

    short = _fixed_budget(iterations, memory, graph, history)
    long = _fixed_budget(2 * iterations, memory, graph, history)
    jiio_history, naive_history = _history_mib(z, x, memory, _NAIVE_MEMORY, history)
    jiio_peak, naive_peak = _peaks_mib_per_sample(problem, short, iterations, device)
    last: dict[str, InputOptResult] = {}

    def run(cfg: JIIOConfig) -> None:
        last["result"] = jiio_solve(problem, cfg)

    per_iter_samples = _paired_marginal_seconds(
        lambda: run(long), lambda: run(short), iterations, device, repeat
    )
    return EngineTiming(
        batch=batch,
        channels=channels,
        size=size,
        memory=memory,
        mode="graph" if last["result"].graph else "eager",
        precision=precision,
        history=history,
        f_seconds=statistics.median(f_times),
        f_vjp_seconds=statistics.median(fv_times),
        jiio_iteration_seconds=statistics.median(per_iter_samples),
        jiio_history_mib_per_sample=jiio_history,
        naive_history_mib_per_sample=naive_history,
        jiio_peak_mib_per_sample=jiio_peak,
        naive_peak_mib_per_sample=naive_peak,
        graph_failure=last["result"].graph_failure,
        repeats=repeat,
        f_spread=relative_spread(f_times),
        f_vjp_spread=relative_spread(fv_times),
        jiio_iteration_spread=relative_spread(per_iter_samples),
    )


_NAIVE_MEMORY = 5
"""Anderson memory of the naive method's inner solves in the memory comparison."""


def _peaks_mib_per_sample(
    problem: InputProblem, jiio: JIIOConfig, iterations: int, device: torch.device
) -> tuple[float | None, float | None]:
    """Peak CUDA memory (MiB per sample) of a JIIO solve and of one naive step whose inner
    solves run ``iterations`` iterations; (None, None) off CUDA, which reports no peak."""
    if device.type != "cuda":
        return None, None
    naive = NaiveConfig(
        steps=1,
        forward=SolverConfig(memory=_NAIVE_MEMORY, max_iter=iterations, tol=1e-30),
        adjoint=SolverConfig(memory=_NAIVE_MEMORY, max_iter=iterations, tol=1e-30),
    )
    batch = problem.batch_size
    jiio_peak = _peak_mib(lambda: jiio_solve(problem, jiio), device) / batch
    naive_peak = _peak_mib(lambda: naive_solve(problem, naive), device) / batch
    return jiio_peak, naive_peak


def _fixed_budget(
    steps: int, memory: int, graph: bool, history: Literal["fp32", "bf16"]
) -> JIIOConfig:
    """JIIO settings that run exactly ``steps`` iterations (a tolerance far below reach)."""
    return JIIOConfig(
        alpha_x=0.01,
        solver=SolverConfig(
            memory=memory,
            tol=1e-30,
            max_iter=steps,
            check_every=10**6,
            graph=graph,
            history=history,
        ),
        refine=SolverConfig(memory=2, tol=1e-30, max_iter=1, check_every=10**6),
    )


def _paired_marginal_seconds(
    run_long: Callable[[], None],
    run_short: Callable[[], None],
    extra_iterations: int,
    device: torch.device,
    repeat: int,
) -> list[float]:
    """``repeat`` measurements of one iteration's cost, (t_long − t_short) / extra.

    Long and short runs alternate, so that each pair sees the same machine; one warm-up
    of each comes first.
    """
    run_long()
    run_short()
    return [
        (time_samples(run_long, device, 1, 0)[0] - time_samples(run_short, device, 1, 0)[0])
        / extra_iterations
        for _ in range(repeat)
    ]


def _history_mib(
    z: torch.Tensor, x: torch.Tensor, memory: int, naive_memory: int, history: str
) -> tuple[float, float]:
    """MiB per sample of JIIO's Anderson history over s = [z; x; μ] and of the naive
    method's over z alone (module docstring), from the sizes of z (B, ...) and x (B, ...)."""
    nz, nx = z[0].numel(), x[0].numel()
    itemsize = z.element_size()
    mib = 2.0**20
    n = 2 * nz + nx
    if history == "bf16":
        # Two (m, n) bfloat16 buffers of differences, the newest f(s) and residual in float32.
        stored = 2 * memory * n * 2 + 2 * n * itemsize
    else:
        stored = 2 * memory * n * itemsize
    jiio = (stored + memory * memory * 8) / mib
    naive = (2 * naive_memory * nz * itemsize + naive_memory**2 * 8) / mib
    return jiio, naive


def _peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA allocation of ``fn`` above what was allocated before it, in MiB."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2.0**20
