"""Few-shot regressor: a FiLM-conditioned MLP DEQ on low-dimensional inputs (sinusoids).

The model maps points t ∈ ℝᵈ of a task to predictions y ∈ ℝᴼ through the equilibrium of
a small MLP cell whose optimised input is a per-task context vector v ∈ ℝᴰ (PAPER.md §5,
the regression counterpart of :class:`~jiio_cli.models.meta.FiLMClassifier`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import DEQModel
from .config import ModelConfig
from .film_base import FiLMCell
from .layers import check_positive

__all__ = ["FiLMMLPDEQCell", "FiLMRegressor", "RegressorConfig"]

CONTRACTION = 0.9
"""Bound ρ on the spectral norm of the cell's recurrent weight: ‖∂f/∂z‖₂ ≤ ρ < 1."""


@dataclass(frozen=True)
class RegressorConfig(ModelConfig):
    """Configuration of :class:`FiLMRegressor`.

    Attributes:
        hidden: H, size of the state z per point.
        context_dim: D, size of the task context v.
        input_dim: d, size of an input point t (1 for sinusoids).
        output_dim: O, size of a prediction y (1 for sinusoids).
        injection_hidden: width of the injection MLP's hidden layer; 0 makes the
            injection linear, u = A t + a.
        head_context: the context also offsets the read-out, [ΔW, Δb] = P v (P learnt,
            bias-free), so adapting v fits a linear read-out of the DEQ features jointly
            with the FiLM modulation; without it, v only modulates the cell.
    """

    hidden: int = 40
    context_dim: int = 32
    input_dim: int = 1
    output_dim: int = 1
    injection_hidden: int = 40
    head_context: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("hidden", self.hidden)
        check_positive("context_dim", self.context_dim)
        check_positive("input_dim", self.input_dim)
        check_positive("output_dim", self.output_dim)
        if self.injection_hidden < 0:
            raise ValueError(f"injection_hidden must be >= 0, got {self.injection_hidden}")


class FiLMMLPDEQCell(FiLMCell):
    """MLP DEQ cell ``z⁺ = f(z, v; t)`` with the input injection modulated by v (FiLM).

    The task's points t are data, bound with :meth:`bind`, which computes their injection
    u = inj(t) and the contractive recurrent weight once. With ``[γ, β] = F v`` (F a
    bias-free linear map ℝᴰ → ℝ²ᴴ)::

        f(z, v; t) = tanh( W̄ z + (1 + γ) ⊙ u(t) + β ),   W̄ = W · min(1, ρ / ‖W‖₂)

    Since |tanh'| ≤ 1, ‖∂f/∂z‖₂ ≤ ‖W̄‖₂ ≤ ρ = :data:`CONTRACTION` < 1 for every t, v
    and parameter value: the fixed point exists, is unique and the solvers converge
    linearly whatever the context. FiLM acts on the injected drive rather than on the
    whole pre-activation for that reason: a gain (1 + γ) on W̄ z could undo the bound.
    v = 0 gives γ = β = 0, the unmodulated cell, at any point of training.

    Shapes: per task row, z (B, n, H), v (B, D), points bound as t (B, n, d); each row
    is a task of n points sharing one context (the engine treats rows independently).

    Args:
        input_dim: d.
        hidden: H.
        context_dim: D.
        injection_hidden: hidden width of the injection MLP (0: linear injection).
        film_init_scale: F starts as N(0, (s/√D)²), so a unit-variance context moves γ
            and β by about s.

    Attributes:
        injection: t (…, d) ↦ u (…, H).
        recurrent: W (H × H), before the spectral bound.
        film: the linear map v ↦ [γ, β].
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int,
        context_dim: int,
        injection_hidden: int = 0,
        film_init_scale: float = 0.5,
    ) -> None:
        super().__init__()
        check_positive("hidden", hidden)
        self.hidden = hidden
        if injection_hidden > 0:
            self.injection: nn.Module = nn.Sequential(
                nn.Linear(input_dim, injection_hidden),
                nn.Tanh(),
                nn.Linear(injection_hidden, hidden),
            )
        else:
            self.injection = nn.Linear(input_dim, hidden)
        self.recurrent = nn.Parameter(torch.empty(hidden, hidden))
        nn.init.normal_(self.recurrent, std=0.5 / math.sqrt(hidden))
        self._init_film(context_dim, hidden, film_init_scale)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Per-row shape of z: (n, H) while points are bound, (H,) otherwise."""
        if self._bound is None:
            return (self.hidden,)
        return tuple(self._bound[0].shape[1:])

    def contractive_weight(self) -> Tensor:
        """W̄ = W · min(1, ρ/‖W‖₂) (H × H), differentiable (‖·‖₂ by SVD)."""
        norm = torch.linalg.matrix_norm(self.recurrent, ord=2)
        return self.recurrent * torch.clamp(CONTRACTION / norm, max=1.0)

    def bind(self, t: Tensor) -> FiLMMLPDEQCell:
        """Compute and store the injection of the points t (B, n, d) and W̄.

        The stored tensors keep their autograd graph, so an outer loss trains the
        injection and W; bind again after every parameter update (and per task batch).

        Returns:
            ``self``.
        """
        if t.ndim != 3:
            raise ValueError(f"bind expects points (B, n, d), got {tuple(t.shape)}")
        self._bound = (self.injection(t), self.contractive_weight())
        return self

    @property
    def _data_name(self) -> str:
        return "points"

    def apply_with(self, u: Tensor, weight: Tensor, z: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
        """f(z, v) for the injection u (B, n, H) and recurrent weight W̄ (H, H)."""
        self._check_rows(u, z, v)
        scale, shift = self.modulation(v)
        drive = (1 + scale[:, None]) * u + shift[:, None]
        return torch.tanh(z @ weight.T + drive)


class FiLMRegressor(DEQModel):
    """Meta-learning DEQ regressor: z* = f(z*, v; t) ↦ y = (W_o + ΔW(v)) z* + b_o + Δb(v).

    The points of a batch of tasks are bound with :meth:`bind`; the engine then optimises
    the contexts v (B, D) (on support MSE + (λ/2)‖v‖²) with ``cell`` as f.

    Args:
        config: the :class:`RegressorConfig`.

    Attributes:
        config: the configuration.
        cell: the :class:`FiLMMLPDEQCell`.
        head: the read-out W_o, b_o: ℝᴴ → ℝᴼ.
        head_offset: with ``head_context``, the bias-free map P: ℝᴰ → ℝᴼ⁽ᴴ⁺¹⁾ giving
            [ΔW, Δb] = P v, so that v = 0 is the unadapted read-out; otherwise None.
    """

    kind: ClassVar[str] = "regressor"
    config_class: ClassVar[type[ModelConfig]] = RegressorConfig

    def __init__(self, config: RegressorConfig | None = None) -> None:
        super().__init__()
        config = self._accept_config(config)
        self.cell = FiLMMLPDEQCell(
            config.input_dim, config.hidden, config.context_dim, config.injection_hidden
        )
        self.head = nn.Linear(config.hidden, config.output_dim)
        self.head_offset: nn.Linear | None = None
        if config.head_context:
            out = config.output_dim * (config.hidden + 1)
            self.head_offset = nn.Linear(config.context_dim, out, bias=False)
            nn.init.normal_(self.head_offset.weight, std=0.5 / math.sqrt(config.context_dim))

    @property
    def context_size(self) -> int:
        """Size D of the context v."""
        return self.config.context_dim

    def context_cell(self) -> Callable[[Tensor, Tensor], Tensor]:
        """f(z, v) of the bound points, captured (see :meth:`FiLMMLPDEQCell.frozen`)."""
        return self.cell.frozen()

    def predict(self, z: Tensor, v: Tensor) -> Tensor:
        """Predictions y (B, n, O) of states z (B, n, H) under contexts v (B, D)."""
        y = self.head(z)
        if self.head_offset is not None:
            c = self.config
            offset = self.head_offset(v).view(v.shape[0], c.output_dim, c.hidden + 1)
            y = y + z @ offset[:, :, :-1].transpose(1, 2) + offset[:, None, :, -1]
        return y

    def bind(self, t: Tensor) -> FiLMMLPDEQCell:
        """Bind the points t (B, n, d) of a batch of tasks; returns the cell."""
        return self.cell.bind(t)

    def unbind(self) -> None:
        """Drop the bound points."""
        self.cell.unbind()
