"""The folded latent injection: the same f as the decoder's layers, and no parameter path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jiio_cli.engine import lagrangian_grads
from jiio_cli.engine.anderson import relative_residual
from jiio_cli.models import ConvDEQCell, DecoderConfig, DEQDecoder, LatentInjection
from jiio_cli.tasks.inverse.problems import (
    InferenceConfig,
    infer_latents,
    reconstruction_settings,
)


def _decoder(dtype: torch.dtype) -> DEQDecoder:
    """A fresh decoder with every parameter redrawn at unit scale, so that no layer is
    near zero (the block's convs start tiny) and the injection's bias matters."""
    decoder = DEQDecoder(
        DecoderConfig(latent_dim=6, channels=8, image_size=10, groups=4, half_resolution=True)
    ).to(dtype)
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
    return decoder


def test_folded_injection_equals_the_layers_in_float64() -> None:
    injection = _decoder(torch.float64).cell.injection
    assert isinstance(injection, LatentInjection)
    folded = injection.folded()
    x = torch.randn(5, 6, dtype=torch.float64) * 3
    assert folded.weight.shape == (6, 8 * 5 * 5)
    torch.testing.assert_close(folded(x), injection(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        folded.bias.view(1, 8, 5, 5), injection.affine_part(torch.zeros(1, 6, dtype=torch.float64))
    )


def test_folded_injection_matches_in_float32() -> None:
    injection = _decoder(torch.float32).cell.injection
    folded = injection.folded()
    assert folded.weight.dtype == torch.float32
    x = torch.randn(7, 6)
    torch.testing.assert_close(folded(x), injection(x), rtol=1e-5, atol=1e-5)


def test_inference_cell_has_the_same_map_and_vector_jacobian_products() -> None:
    decoder = _decoder(torch.float64)
    cell, fast = decoder.cell, decoder.inference_cell()
    assert fast.block is cell.block and fast.state_shape == cell.state_shape
    z = torch.randn(4, 8, 5, 5, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    mu = torch.randn_like(z)

    def objective(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return decoder.head(z).pow(2).flatten(1).sum(1) + x.pow(2).sum(1)

    for exact, folded in zip(
        lagrangian_grads(cell, objective, z, x, mu),
        lagrangian_grads(fast, objective, z, x, mu),
        strict=True,
    ):
        torch.testing.assert_close(folded, exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.with_fixed_input(x)(z), cell(z, x), rtol=1e-10, atol=1e-12)


def test_the_fold_is_a_snapshot_that_carries_no_gradient_to_the_injection() -> None:
    decoder = _decoder(torch.float32)
    fast = decoder.inference_cell()
    z, x = torch.randn(2, 8, 5, 5), torch.randn(2, 6)
    fast(z, x).sum().backward()
    linear = decoder.cell.injection.linear
    assert linear.weight.grad is None
    assert decoder.cell.block.conv1.weight.grad is not None  # the shared block is the cell's
    before = fast(z, x).detach()
    with torch.no_grad():
        linear.weight.add_(1.0)
    torch.testing.assert_close(fast(z, x), before)  # folded at construction
    assert not torch.allclose(decoder.inference_cell()(z, x), before)


def test_infer_latents_solves_folded_and_returns_the_trainable_cell() -> None:
    # The block keeps its small initial convs (a contraction, so there is a fixed point
    # to find); the injection is redrawn at unit scale so that folding it matters.
    decoder = DEQDecoder(
        DecoderConfig(latent_dim=6, channels=8, image_size=10, groups=4, half_resolution=True)
    )
    with torch.no_grad():
        for p in decoder.cell.injection.parameters():
            p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
    observed = torch.rand(3, 1, 10, 10)
    known = torch.ones(3, 1, 10, 10)
    settings = reconstruction_settings(40, memory=5)
    problem, result = infer_latents(decoder, observed, known, settings)
    assert problem.cell is decoder.cell
    # The result is a solve of the decoder's own f: its residual under the layered cell
    # is the one the solve reported under the folded cell, up to float32 rounding.
    with torch.no_grad():
        fz = decoder.cell(result.z, result.x)
    residual = relative_residual(result.z.flatten(1), fz.flatten(1))[:, 0]
    assert (residual <= result.residual_z + 1e-5).all()
    problem.cell(result.z, result.x).sum().backward()
    assert decoder.cell.injection.linear.weight.grad is not None
    naive = InferenceConfig(method="naive")
    assert infer_latents(decoder, observed, known, naive)[0].cell is decoder.cell


def test_a_cell_refuses_an_injection_of_another_shape() -> None:
    cell = ConvDEQCell(8, LatentInjection(4, 8, 5, 5, groups=4), groups=4)
    with pytest.raises(ValueError, match="state has shape"):
        cell.with_injection(LatentInjection(4, 8, 6, 5, groups=4))
    with pytest.raises(ValueError, match="state has shape"):
        cell.with_injection(nn.Identity())
