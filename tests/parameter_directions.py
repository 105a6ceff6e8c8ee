"""Directional derivatives along the parameters, for the meta-gradient tests.

A gradient g = ∂L/∂θ left in the parameters' ``.grad`` is checked along a direction d (one
tensor per parameter) by comparing ⟨g, d⟩ with the central difference
(L(θ + εd) − L(θ − εd)) / 2ε computed on perturbed copies of the model.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor

from jiio_cli.models.base import DEQModel

__all__ = ["directional_derivative", "perturbed"]

Model = TypeVar("Model", bound=DEQModel)


def perturbed(model: Model, direction: list[Tensor], eps: float) -> Model:
    """A float64 copy of ``model`` with parameters θ + ε·d (``model`` is left unchanged)."""
    clone = type(model)(model.config).double()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p, d in zip(clone.parameters(), direction, strict=True):
            p.add_(eps * d)
    return clone


def directional_derivative(model: DEQModel, direction: list[Tensor]) -> float:
    """⟨∂L/∂θ, d⟩ summed over the parameters that received a gradient (a read-out that
    does not use a parameter, like the centroid one the head, leaves it without)."""
    return sum(
        float((p.grad * d).sum())
        for p, d in zip(model.parameters(), direction, strict=True)
        if p.grad is not None
    )
