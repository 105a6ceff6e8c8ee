"""The start every DEQ cell and model here shares: z = 0, on their parameters' device and dtype."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import param_device_dtype

__all__ = ["ZeroStateModule"]


class ZeroStateModule(nn.Module):
    """Base of the DEQ cells, and of the models built on them, whose fixed-point iteration
    starts from z = 0.

    Subclasses give ``state_shape``, the per-row shape of z (an attribute or a property),
    and may refuse a batch size in :meth:`check_batch` (a FiLM cell bound to data of
    another number of rows; a model asks its cell).
    """

    state_shape: tuple[int, ...]

    def check_batch(self, batch: int) -> None:
        """Raise ValueError when ``batch`` rows cannot start (all can, by default)."""

    def init_state(
        self,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Zero initial state (B, *state_shape); device/dtype default to the parameters'.

        Raises:
            ValueError: :meth:`check_batch` refuses ``batch``.
        """
        self.check_batch(batch)
        device, dtype = param_device_dtype(self, device, dtype)
        return torch.zeros(batch, *self.state_shape, device=device, dtype=dtype)
