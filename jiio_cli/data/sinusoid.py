"""Sinusoid regression tasks, the classic few-shot benchmark of MAML (Finn et al. 2017).

A task is y = A·sin(t − φ) with amplitude A ~ U[0.1, 5] and phase φ ~ U[0, π]; its
inputs t are drawn from U[−5, 5]. No data files: every task is drawn from a seeded
generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SinusoidBatch", "sample_sinusoid_tasks"]

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)


@dataclass(frozen=True)
class SinusoidBatch:
    """B regression tasks with K support and Q query points each.

    Attributes:
        support_t, support_y: (B, K, 1); query_t, query_y: (B, Q, 1).
        amplitude, phase: (B,) the task parameters.
    """

    support_t: Tensor
    support_y: Tensor
    query_t: Tensor
    query_y: Tensor
    amplitude: Tensor
    phase: Tensor


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], g: torch.Generator) -> Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=g)


def sample_sinusoid_tasks(
    batch: int, shots: int, queries: int, generator: torch.Generator
) -> SinusoidBatch:
    """Draw ``batch`` sinusoid tasks with ``shots`` support and ``queries`` query points."""
    amplitude = _uniform((batch,), AMPLITUDE, generator)
    phase = _uniform((batch,), PHASE, generator)
    t = _uniform((batch, shots + queries, 1), INPUT_RANGE, generator)
    y = amplitude[:, None, None] * torch.sin(t - phase[:, None, None])
    return SinusoidBatch(t[:, :shots], y[:, :shots], t[:, shots:], y[:, shots:], amplitude, phase)
