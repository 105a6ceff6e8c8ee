"""Feasible sets for the optimised input x and their projections.

Every projection here is *rounding-safe*: the returned x satisfies the constraint when
distances are computed in the tensor's own dtype (``(x - c).abs().amax() <= eps`` for
L∞, ``(x - c).norm() <= eps`` for L2). A tiny margin of a few units in the last place
is taken off the radius to absorb rounding in ``c + d``; this matters for attacks, whose
reported perturbation norm must never exceed the budget.

The balls may be combined with a pixel box: the ball projection is applied first and the
box clamp second. When the centre lies in the box the clamp only moves coordinates
toward the centre, so the result lies in both sets (it is a feasible point, not in
general the exact Euclidean projection onto the intersection for L2; for L∞ it is exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

__all__ = [
    "Box",
    "Constraint",
    "L2Ball",
    "LinfBall",
    "NoConstraint",
    "StepRule",
    "apply_step_rule",
]

StepRule = Literal["plain", "l2", "sign"]

_MARGIN_ULPS = 16.0


def _per_sample(value: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar or (B,) tensor to (B, 1, ..., 1) in ``like``'s dtype/device."""
    if not isinstance(value, Tensor):
        # A fill, not a host-to-device copy: the projection may run inside a CUDA graph.
        return like.new_full((like.shape[0], *([1] * (like.ndim - 1))), float(value))
    t = value.to(dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    return t.reshape(like.shape[0], *([1] * (like.ndim - 1)))


def _flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm of (B, ...) as (B, 1, ..., 1)."""
    return t.flatten(1).norm(dim=1).reshape(t.shape[0], *([1] * (t.ndim - 1)))


class Constraint(Protocol):
    """A feasible set 𝒳 for x of shape (B, ...)."""

    def project(self, x: Tensor) -> Tensor:
        """Return a point of 𝒳 (B, ...) near x."""
        ...

    def violation(self, x: Tensor) -> Tensor:
        """Per-sample amount by which x lies outside 𝒳, shape (B,); 0 when inside."""
        ...


@dataclass(frozen=True)
class NoConstraint:
    """𝒳 = whole space."""

    def project(self, x: Tensor) -> Tensor:
        return x

    def violation(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0])


@dataclass(frozen=True)
class Box:
    """Coordinate-wise box lo ≤ x ≤ hi (the pixel box [0, 1] by default)."""

    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        if not self.lo <= self.hi:
            raise ValueError(f"box bounds must satisfy lo <= hi, got [{self.lo}, {self.hi}]")

    def project(self, x: Tensor) -> Tensor:
        return x.clamp(self.lo, self.hi)

    def violation(self, x: Tensor) -> Tensor:
        over = (x - self.hi).clamp_min(0) + (self.lo - x).clamp_min(0)
        return over.flatten(1).amax(dim=1)


@dataclass(frozen=True)
class _Ball:
    """‖x − c‖ ≤ ε per sample in some norm, optionally intersected with a box.

    Args:
        center: c, shape (B, ...).
        eps: radius ε ≥ 0, a float or a (B,) tensor.
        box: optional box; c must lie inside it.

    A subclass says how big the centre is for the rounding margin, how to measure a
    per-sample distance and how to pull x onto a (slightly shrunk) ball.
    """

    center: Tensor
    eps: Tensor | float
    box: Box | None = None

    def _center_size(self) -> Tensor:
        """The scale of c's entries that rounding in c + d is relative to."""
        raise NotImplementedError

    def _distance(self, d: Tensor) -> Tensor:
        """‖d‖ per sample, (B,)."""
        raise NotImplementedError

    def _pull_within(self, x: Tensor, radius: Tensor) -> Tensor:
        """The point of the ball of ``radius`` (B, 1, ..., 1) around c nearest to x."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        eps = _per_sample(self.eps, x)
        ulp = torch.finfo(x.dtype).eps
        # Shrink by a few ulps of the centre's size + ε so that the computed ‖x − c‖ ≤ ε.
        radius = (eps - _MARGIN_ULPS * ulp * (self._center_size() + eps)).clamp_min(0)
        out = self._pull_within(x, radius)
        return self.box.project(out) if self.box is not None else out

    def violation(self, x: Tensor) -> Tensor:
        eps = _per_sample(self.eps, x).flatten()
        gap = (self._distance(x - self.center) - eps).clamp_min(0)
        if self.box is not None:
            gap = torch.maximum(gap, self.box.violation(x))
        return gap


class LinfBall(_Ball):
    """‖x − c‖∞ ≤ ε, optionally intersected with a box (see :class:`_Ball`)."""

    def _center_size(self) -> Tensor:
        # Per coordinate: clamping each coordinate rounds relative to its own |cᵢ|.
        return self.center.abs()

    def _distance(self, d: Tensor) -> Tensor:
        return d.flatten(1).abs().amax(dim=1)

    def _pull_within(self, x: Tensor, radius: Tensor) -> Tensor:
        c = self.center
        return torch.maximum(torch.minimum(x, c + radius), c - radius)


class L2Ball(_Ball):
    """‖x − c‖₂ ≤ ε per sample, optionally intersected with a box (see :class:`_Ball`)."""

    def _center_size(self) -> Tensor:
        # Absolute margin: rounding in c + d is of order ulp·(‖c‖ + ‖d‖).
        return _flat_norm(self.center)

    def _distance(self, d: Tensor) -> Tensor:
        return d.flatten(1).norm(dim=1)

    def _pull_within(self, x: Tensor, radius: Tensor) -> Tensor:
        d = x - self.center
        norm = _flat_norm(d)
        scale = torch.where(norm > radius, radius / norm.clamp_min(torch.finfo(x.dtype).tiny), 1.0)
        return self.center + d * scale


def apply_step_rule(grad: Tensor, rule: StepRule) -> Tensor:
    """Direction of an x step from its gradient (B, ...).

    ``plain`` returns g; ``l2`` returns g / ‖g‖₂ per sample (0 where g = 0), the
    normalised step of L2 attacks; ``sign`` returns sign(g), the steepest step for L∞.
    """
    if rule == "plain":
        return grad
    if rule == "l2":
        return grad / _flat_norm(grad).clamp_min(torch.finfo(grad.dtype).tiny)
    if rule == "sign":
        return torch.sign(grad)
    raise ValueError(f"unknown step rule {rule!r}: expected 'plain', 'l2' or 'sign'")
