"""The conv4 encoder's inference path (BatchNorm folded into the convolutions, pooling
before the ReLU, channels-last) against its blocks run one by one, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jiio_cli.models.conv4 import Conv4Encoder, max_pool_2x2


def _encoder(seed: int, channels: int = 8) -> Conv4Encoder:
    """An encoder whose BatchNorms hold drawn running statistics and affine parameters
    (at initialisation they are the identity, which would hide a wrong folding)."""
    torch.manual_seed(seed)
    encoder = Conv4Encoder(1, channels).double()
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.3, 3.0)
                module.weight.uniform_(-1.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return encoder


def _seed() -> int:
    return int(torch.randint(0, 2**31 - 1, (1,)))


@pytest.mark.parametrize("side", [28, 20, 33])
def test_inference_is_the_blocks_one_by_one(side: int) -> None:
    encoder = _encoder(_seed()).eval()
    images = torch.rand(5, 1, side, side, dtype=torch.float64)
    expected = encoder.blocks(images).flatten(1)
    torch.testing.assert_close(encoder(images), expected, rtol=1e-12, atol=1e-12)


def test_inference_gradients_are_the_blocks_gradients() -> None:
    encoder = _encoder(_seed()).eval()
    images = torch.rand(4, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 8, dtype=torch.float64)
    params = [images, *encoder.parameters()]
    folded = torch.autograd.grad((encoder(images) * weights).sum(), params)
    plain = torch.autograd.grad((encoder.blocks(images).flatten(1) * weights).sum(), params)
    for a, b in zip(folded, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_training_uses_the_batch_statistics() -> None:
    """In training mode the BatchNorms normalise by the batch, not the running statistics:
    the output is the blocks' in training mode, and differs from inference."""
    encoder = _encoder(_seed()).train()
    images = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    reference = _encoder(0).train()
    reference.load_state_dict(encoder.state_dict())
    trained = encoder(images)
    torch.testing.assert_close(trained, reference.blocks(images).flatten(1))
    assert (trained - encoder.eval()(images)).abs().max() > 1e-3


@pytest.mark.parametrize("side", [(28, 28), (7, 7), (3, 5), (2, 9)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_max_pool_2x2_is_max_pool2d(side: tuple[int, int], layout: torch.memory_format) -> None:
    """Values and (tie-free) gradients of the strided-maximum pool equal ``F.max_pool2d``'s,
    floor mode on odd sides, in either memory layout."""
    torch.manual_seed(_seed())
    x = torch.randn(3, 6, *side, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_(True)
    ours, theirs = max_pool_2x2(x), F.max_pool2d(x, 2)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    weights = torch.randn_like(theirs)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (g_theirs,) = torch.autograd.grad((theirs * weights).sum(), x)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=0)
