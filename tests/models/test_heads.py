"""The image head's factorised upsample-then-convolve against the literal computation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from jiio_cli.models.heads import ImageHead, shifted_taps
from jiio_cli.models.layers import bilinear_resize, interpolation_matrix


def literal_upsampled_conv(head: ImageHead) -> Callable[[torch.Tensor], torch.Tensor]:
    """conv₃ₓ₃(upsample(z)) computed as written: the form the head factorises."""

    def forward(z: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(z, size=head.image_size, mode="bilinear", align_corners=False)
        return head.conv(up)

    return forward


@pytest.mark.parametrize(
    ("channels", "image_channels", "state_size", "image_size"),
    [
        (32, 1, (14, 14), (28, 28)),  # the shipped decoder's shape
        (6, 3, (7, 7), (28, 28)),
        (5, 2, (13, 11), (28, 24)),  # rectangular, odd, not an integer factor
        (4, 1, (16, 16), (32, 32)),
    ],
)
def test_factorised_head_equals_upsample_then_conv(
    channels: int,
    image_channels: int,
    state_size: tuple[int, int],
    image_size: tuple[int, int],
) -> None:
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    head = ImageHead(channels, image_channels, image_size).double()
    with torch.no_grad():
        head.conv.weight.copy_(torch.randn(head.conv.weight.shape, generator=gen))
        head.conv.bias.copy_(torch.randn(head.conv.bias.shape, generator=gen))
    z = torch.randn(3, channels, *state_size, generator=gen, dtype=torch.float64)
    probe = torch.randn(3, image_channels, *image_size, generator=gen, dtype=torch.float64)

    def value_and_grads(fn):
        zr = z.clone().requires_grad_(True)
        out = fn(zr)
        grads = torch.autograd.grad((out * probe).sum(), (zr, head.conv.weight, head.conv.bias))
        return out.detach(), grads

    fast, fast_grads = value_and_grads(head.upsampled_conv)
    ref, ref_grads = value_and_grads(literal_upsampled_conv(head))
    assert fast.shape == (3, image_channels, *image_size)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # The module's forward takes the factorised path and applies the sigmoid.
    torch.testing.assert_close(head(z), torch.sigmoid(ref), rtol=1e-12, atol=1e-12)


def test_head_at_image_resolution_is_a_plain_conv() -> None:
    head = ImageHead(4, 1, 10).double()
    z = torch.randn(2, 4, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(head(z), torch.sigmoid(head.conv(z)))


def test_factorised_head_passes_gradcheck() -> None:
    head = ImageHead(3, 2, (9, 8)).double()
    z = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(head.upsampled_conv, (z,))


def test_interpolation_matrix_reproduces_bilinear_resizing() -> None:
    z = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    u_h = interpolation_matrix(5, 12, z.device, z.dtype)
    u_w = interpolation_matrix(7, 9, z.device, z.dtype)
    ref = F.interpolate(z, size=(12, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(u_h @ z @ u_w.T, ref)


def test_shifted_taps_pad_with_zero_rows() -> None:
    matrix = torch.arange(1.0, 7.0).view(3, 2)
    taps = shifted_taps(matrix, 3)
    assert taps.shape == (3, 3, 2)
    torch.testing.assert_close(taps[1], matrix)
    torch.testing.assert_close(taps[0][0], torch.zeros(2))  # row −1 is padding
    torch.testing.assert_close(taps[0][1:], matrix[:2])
    torch.testing.assert_close(taps[2][:2], matrix[1:])
    torch.testing.assert_close(taps[2][2], torch.zeros(2))


@pytest.mark.parametrize(("size_in", "size_out"), [((4, 4), (14, 14)), ((3, 5), (13, 10))])
def test_bilinear_resize_equals_interpolate_values_and_gradients(
    size_in: tuple[int, int], size_out: tuple[int, int]
) -> None:
    x = torch.randn(2, 3, *size_in, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 3, *size_out, dtype=torch.float64)
    fast = bilinear_resize(x, size_out)
    ref = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    torch.testing.assert_close(fast, ref)
    (g_fast,) = torch.autograd.grad((fast * probe).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * probe).sum(), x)
    torch.testing.assert_close(g_fast, g_ref)
    assert bilinear_resize(x, size_in) is x


def test_cached_matrices_work_after_inference_mode() -> None:
    with torch.inference_mode():
        interpolation_matrix(6, 11, torch.device("cpu"), torch.float64)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(bilinear_resize(x, (11, 11)).sum(), x)
    assert torch.isfinite(grad).all()
