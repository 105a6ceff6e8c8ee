"""Small random DEQ problems for the engine tests (fresh random draws per call)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from jiio_cli.engine import InputProblem, NaiveConfig, SolverConfig
from jiio_cli.engine.constraints import Constraint, NoConstraint, StepRule


def adam_reference(steps: int, inner: SolverConfig) -> NaiveConfig:
    """The naive method the tests hold JIIO against: ``steps`` Adam steps on x (lr 0.05,
    cosine decay), each solving z* and μ* with ``inner`` from the previous step's."""
    return NaiveConfig(
        method="adam",
        steps=steps,
        lr=0.05,
        lr_decay="cosine",
        forward=inner,
        adjoint=inner,
        warm_start=True,
    )


class TanhCell(nn.Module):
    """f(z, x) = tanh(W z + U x + b) with ‖W‖₂ = ``contraction`` (contractive if < 1)."""

    def __init__(
        self,
        dz: int,
        dx: int,
        contraction: float = 0.5,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        w = torch.randn(dz, dz, generator=generator, dtype=dtype)
        w = w * (contraction / torch.linalg.matrix_norm(w, ord=2))
        self.weight = nn.Parameter(w)
        self.inject = nn.Parameter(torch.randn(dz, dx, generator=generator, dtype=dtype) / dx**0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(dz, generator=generator, dtype=dtype))

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(z @ self.weight.T + x @ self.inject.T + self.bias)


class QuadraticObjective(nn.Module):
    """ℓ(z, x) = ½‖A z − y‖² + (γ/2)‖x‖² per sample, with A a trainable read-out."""

    def __init__(self, readout: Tensor, target: Tensor, gamma: float) -> None:
        super().__init__()
        self.readout = nn.Parameter(readout)
        self.target = target
        self.gamma = gamma

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        err = z @ self.readout.T - self.target
        return 0.5 * err.pow(2).sum(dim=1) + 0.5 * self.gamma * x.pow(2).sum(dim=1)


def quadratic_problem(
    batch: int,
    dz: int = 8,
    dx: int = 4,
    dy: int = 6,
    gamma: float = 0.3,
    contraction: float = 0.5,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    constraint: Constraint | None = None,
    step_rule: StepRule = "plain",
    seed: int | None = None,
) -> tuple[InputProblem, TanhCell, QuadraticObjective]:
    """A random contractive tanh DEQ with a quadratic read-out objective."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    cell = TanhCell(dz, dx, contraction, dtype, gen).to(device)
    readout = torch.randn(dy, dz, generator=gen, dtype=dtype) / dz**0.5
    target = 0.5 * torch.randn(batch, dy, generator=gen, dtype=dtype)
    objective = QuadraticObjective(readout, target.to(device), gamma).to(device)
    x0 = 0.1 * torch.randn(batch, dx, generator=gen, dtype=dtype)
    problem = InputProblem(
        cell=cell,
        objective=objective,
        z0=torch.zeros(batch, dz, dtype=dtype, device=device),
        x0=x0.to(device),
        constraint=constraint or NoConstraint(),
        step_rule=step_rule,
    )
    return problem, cell, objective


def scaled_row_problems(
    scales: tuple[float, ...], seed: int
) -> Callable[[Tensor | None], InputProblem]:
    """Row b: ℓ_b = s_b (½‖A z − y_b‖² + 0.15‖x‖²) through one tanh DEQ (float64), s_b
    from ``scales``: rows of one batch whose x steps are of very different stiffness.
    Returns the builder of the problem of any subset of rows (None: all)."""
    g = torch.Generator().manual_seed(seed)
    batch, dz, dx, dy = len(scales), 8, 4, 6
    cell = TanhCell(dz, dx, 0.5, torch.float64, g)
    readout = torch.randn(dy, dz, generator=g, dtype=torch.float64) / dz**0.5
    target = 0.5 * torch.randn(batch, dy, generator=g, dtype=torch.float64)
    x0 = 0.1 * torch.randn(batch, dx, generator=g, dtype=torch.float64)
    row_scales = torch.tensor(scales, dtype=torch.float64)

    def problem_for(rows: Tensor | None) -> InputProblem:
        idx = torch.arange(batch) if rows is None else rows

        def objective(z: Tensor, x: Tensor) -> Tensor:
            err = z @ readout.T - target[idx]
            return row_scales[idx] * (0.5 * err.pow(2).sum(1) + 0.15 * x.pow(2).sum(1))

        z0 = torch.zeros(idx.shape[0], dz, dtype=torch.float64)
        return InputProblem(cell, objective, z0=z0, x0=x0[idx])

    return problem_for
