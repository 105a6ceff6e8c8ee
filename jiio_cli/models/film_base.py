"""What every FiLM-conditioned DEQ cell shares: the context map and the bound data.

A FiLM cell z⁺ = f(z, v; data) looks at fixed data (images, regression points) that are
*bound* once per batch, and is modulated by a context v ∈ ℝᴰ, the engine's optimised
input, through a bias-free linear map [γ, β] = F v (so v = 0 is the unmodulated cell at
any point of training). Subclasses decide what binding stores (a tuple of tensors whose
first entry has the per-row shape of z) and how f uses it (:meth:`FiLMCell.apply_with`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from torch import Tensor, nn

from .layers import check_positive
from .zero_state import ZeroStateModule

__all__ = ["FiLMCell"]


class FiLMCell(ZeroStateModule):
    """Base of the FiLM cells: the map v ↦ (γ, β), binding, freezing and the zero state.

    Attributes:
        context_dim: D, the size of v.
        film: the bias-free linear map v ↦ [γ, β] (set by :meth:`_init_film`).
    """

    context_dim: int
    film: nn.Linear

    def __init__(self) -> None:
        super().__init__()
        self._bound: tuple[Tensor, ...] | None = None

    def _init_film(self, context_dim: int, features: int, init_scale: float) -> None:
        """Create F: ℝᴰ → ℝ²ᶠ, entries N(0, (s/√D)²), so a unit-variance v moves γ, β by s.

        Called by subclasses where their parameters are created (the order fixes which
        random numbers each parameter draws for a given seed).
        """
        check_positive("context_dim", context_dim)
        if not init_scale >= 0.0:
            raise ValueError(f"film_init_scale must be >= 0, got {init_scale!r}")
        self.context_dim = context_dim
        # No bias: v = 0 must stay the identity modulation after training too.
        self.film = nn.Linear(context_dim, 2 * features, bias=False)
        nn.init.normal_(self.film.weight, std=init_scale / math.sqrt(context_dim))

    @property
    def _data_name(self) -> str:
        """What the bound data are called in messages (``images``, ``points``)."""
        return "data"

    def unbind(self) -> None:
        """Drop the bound data (and the autograd graph they hold)."""
        self._bound = None

    def modulation(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """FiLM parameters (γ, β), each (B, F), of contexts v (B, D)."""
        if v.ndim != 2 or v.shape[1] != self.context_dim:
            raise ValueError(
                f"context must have shape (B, {self.context_dim}), got {tuple(v.shape)}"
            )
        scale, shift = self.film(v).chunk(2, dim=1)
        return scale, shift

    def apply_with(self, *bound_and_state: Tensor) -> Tensor:
        """f(z, v) for the bound tensors, then z and v (subclasses define it)."""
        raise NotImplementedError

    def _check_rows(self, u: Tensor, z: Tensor, v: Tensor) -> None:
        """z must have the bound data's shape, and v one row per row of z."""
        if z.shape != u.shape:
            raise ValueError(
                f"z has shape {tuple(z.shape)} but the bound {self._data_name} give "
                f"{tuple(u.shape)}"
            )
        if v.shape[0] != z.shape[0]:
            raise ValueError(f"z has {z.shape[0]} rows but the context has {v.shape[0]}")

    def _bound_or_raise(self, doing: str) -> tuple[Tensor, ...]:
        if self._bound is None:
            raise RuntimeError(
                f"{type(self).__name__}: call bind({self._data_name}) before {doing} the cell"
            )
        return self._bound

    def forward(self, z: Tensor, v: Tensor) -> Tensor:
        """Apply f to z (B, *state_shape) at contexts v (B, D) for the bound data."""
        return self.apply_with(*self._bound_or_raise("evaluating"), z, v)

    def frozen(self) -> Callable[[Tensor, Tensor], Tensor]:
        """f(z, v) with the bound data captured, independent of later binds.

        Backward hooks (implicit differentiation) evaluate f after the forward pass is
        over, when the cell may already be bound to other data or unbound.
        """
        return functools.partial(self.apply_with, *self._bound_or_raise("freezing"))

    def check_batch(self, batch: int) -> None:
        """Raise ValueError when data are bound for a different number of rows."""
        if self._bound is not None and self._bound[0].shape[0] != batch:
            raise ValueError(
                f"{self._data_name} are bound for {self._bound[0].shape[0]} rows, asked for {batch}"
            )

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Per-row shape of z (subclasses define it)."""
        raise NotImplementedError
