"""Packing of structured per-sample states into one flat batch matrix.

The solvers work on a flat state ``s`` of shape (B, N). Problems have several blocks
(z, x, μ) and cells may carry a list of multi-scale tensors; :class:`StateLayout`
maps between the two without copies on the way out (``unpack`` returns views).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["MultiScaleCell", "StateLayout"]


@dataclass(frozen=True)
class StateLayout:
    """Per-sample shapes of the blocks stacked in a flat state.

    Args:
        shapes: shape of each block without the batch dimension, e.g.
            ``[(C, H, W), (D,), (C, H, W)]`` for (z, x, μ).
    """

    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, tensors: Sequence[Tensor]) -> StateLayout:
        """Layout of batched tensors (B, *shape_i)."""
        return cls(tuple(tuple(t.shape[1:]) for t in tensors))

    @property
    def sizes(self) -> list[int]:
        """Number of scalars per sample in each block."""
        return [math.prod(shape) for shape in self.shapes]

    @property
    def numel(self) -> int:
        """Total scalars per sample, N."""
        return sum(self.sizes)

    def pack(self, tensors: Sequence[Tensor]) -> Tensor:
        """Flatten blocks (B, *shape_i) into one (B, N) tensor."""
        batch = tensors[0].shape[0]
        return torch.cat([t.reshape(batch, -1) for t in tensors], dim=1)

    def unpack(self, state: Tensor) -> list[Tensor]:
        """Split a (B, N) state into views of shape (B, *shape_i)."""
        batch = state.shape[0]
        parts = torch.split(state, self.sizes, dim=1)
        return [p.view(batch, *shape) for p, shape in zip(parts, self.shapes, strict=True)]


class MultiScaleCell(nn.Module):
    """Adapt a cell whose state is a list of tensors to the engine's tensor state.

    The wrapped cell computes ``[z_1', ..., z_k'] = f([z_1, ..., z_k], x)``; this module
    exposes ``f(z, x)`` with ``z`` of shape (B, Σ_i numel(z_i)) so that every solver can
    treat it like any single-tensor cell.

    Args:
        cell: module taking ``(list[Tensor], x)`` and returning a list of the same shapes.
        shapes: per-sample shapes of the state tensors.
    """

    def __init__(self, cell: nn.Module, shapes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.cell = cell
        self.layout = StateLayout(tuple(tuple(s) for s in shapes))

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        return self.layout.pack(self.cell(self.layout.unpack(z), x))

    def init_state(self, batch: int, device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """Zero state of shape (B, N)."""
        return torch.zeros(batch, self.layout.numel, device=device, dtype=dtype)
