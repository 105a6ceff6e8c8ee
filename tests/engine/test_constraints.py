"""Projections keep every point feasible, whatever the radius and the input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jiio_cli.engine import Box, L2Ball, LinfBall, apply_step_rule

radii = st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False)
dtypes = st.sampled_from([torch.float32, torch.float64])


def _linf_norm(d: torch.Tensor) -> torch.Tensor:
    return d.abs().flatten(1).amax(dim=1)


def _l2_norm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1)


# (ball, the norm it bounds, the shape of the points, whether projecting twice is a no-op).
BALLS = [
    pytest.param(LinfBall, _linf_norm, (4, 3, 5, 5), True, id="linf"),
    pytest.param(L2Ball, _l2_norm, (4, 1, 6, 6), False, id="l2"),
]


@pytest.mark.parametrize(("ball", "norm", "shape", "idempotent"), BALLS)
@settings(max_examples=150, deadline=None)
@given(eps=radii, scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31 - 1), dtype=dtypes)
def test_projection_is_feasible(
    ball: type[LinfBall] | type[L2Ball],
    norm: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    idempotent: bool,
    eps: float,
    scale: float,
    seed: int,
    dtype: torch.dtype,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(*shape, generator=gen).to(dtype)
    x = center + scale * torch.randn(*shape, generator=gen).to(dtype)
    for box in (None, Box(0.0, 1.0)):
        out = ball(center, eps, box).project(x)
        assert (norm(out - center) <= eps).all()
        if box is not None:
            assert out.min() >= 0 and out.max() <= 1
        if idempotent:  # points already inside stay put
            inside = ball(center, eps, box).project(out)
            assert torch.allclose(inside, out, atol=1e-5 * (1 + eps))


def test_l2_projection_is_the_nearest_point_without_box() -> None:
    center = torch.zeros(2, 3, dtype=torch.float64)
    x = torch.tensor([[3.0, 4.0, 0.0], [0.1, 0.0, 0.0]], dtype=torch.float64)
    out = L2Ball(center, 1.0).project(x)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64))
    assert torch.equal(out[1], x[1])


def test_per_sample_radius() -> None:
    center = torch.zeros(3, 4)
    x = torch.ones(3, 4)
    eps = torch.tensor([0.1, 0.5, 2.0])
    out = LinfBall(center, eps).project(x)
    assert torch.allclose(out.amax(dim=1), torch.tensor([0.1, 0.5, 1.0]), atol=1e-6)


def test_step_rules() -> None:
    g = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    assert torch.allclose(apply_step_rule(g, "l2")[0], torch.tensor([0.6, -0.8]))
    assert torch.equal(apply_step_rule(g, "l2")[1], torch.zeros(2))
    assert torch.equal(apply_step_rule(g, "sign"), torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    assert torch.equal(apply_step_rule(g, "plain"), g)
