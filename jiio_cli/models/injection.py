"""Input injections: maps from the optimised input x to a feature map u that drives a cell.

Both injections end in a GroupNorm, so u has zero mean and unit variance per group
whatever the scale of x (up to the learnt affine). That matters for the DEQ: the cell's
dependence on z enters through a small-gain conv that is added to u before a GroupNorm,
so the cell contracts in z only when u is not tiny. Without the norm, x = 0 (where JIIO
starts) would give u ≈ 0 and an untrained cell with no unique fixed point. As in MDEQ,
whose injection ends in a norm layer, u is close to invariant to rescaling x whenever
the biases are small next to the x-dependent part.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from .layers import bilinear_resize, check_groups, check_positive, conv3x3, pair

__all__ = ["FoldedLatentInjection", "ImageInjection", "LatentInjection"]


class LatentInjection(nn.Module):
    """Inject a latent vector into a feature map.

    ``u = GN(conv(upsample(reshape(W x + b))))``: a linear layer writes x onto a coarse
    grid of size (⌈H/k⌉, ⌈W/k⌉), bilinear upsampling (as two matrix products,
    :func:`~jiio_cli.models.layers.bilinear_resize`) brings it to (H, W) and a 3×3 conv
    smooths the upsampling artefacts. Going through a coarse grid keeps the linear layer
    k² times smaller than a direct map to (C, H, W).

    Args:
        latent_dim: D, size of the latent code.
        channels: C, channels of u.
        height: H of u.
        width: W of u.
        groups: GroupNorm groups; must divide C.
        coarse_factor: k, downsampling factor of the grid the linear layer writes to.

    Shapes:
        x: (B, D) → u: (B, C, H, W).

    Attributes:
        channels: C.
        spatial_size: (H, W).
        output_shape: (C, H, W).
    """

    def __init__(
        self,
        latent_dim: int,
        channels: int,
        height: int,
        width: int,
        groups: int = 8,
        coarse_factor: int = 4,
    ) -> None:
        super().__init__()
        check_positive("latent_dim", latent_dim)
        check_groups(channels, groups)
        check_positive("height", height)
        check_positive("width", width)
        check_positive("coarse_factor", coarse_factor)
        self.latent_dim = latent_dim
        self.channels = channels
        self.spatial_size: tuple[int, int] = (height, width)
        self.coarse_size: tuple[int, int] = (
            math.ceil(height / coarse_factor),
            math.ceil(width / coarse_factor),
        )
        self.linear = nn.Linear(latent_dim, channels * self.coarse_size[0] * self.coarse_size[1])
        self.conv = conv3x3(channels, channels, bias=True)
        self.norm = nn.GroupNorm(groups, channels)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Per-sample shape of u, (C, H, W)."""
        return (self.channels, *self.spatial_size)

    def forward(self, x: Tensor) -> Tensor:
        """Map x (B, D) to u (B, C, H, W)."""
        _check_latent(x, self.latent_dim)
        return self.norm(self.affine_part(x))

    def affine_part(self, x: Tensor) -> Tensor:
        """``conv(upsample(reshape(W x + b)))`` (B, C, H, W): the injection before its norm."""
        grid = self.linear(x).view(x.shape[0], self.channels, *self.coarse_size)
        return self.conv(bilinear_resize(grid, self.spatial_size))

    def folded(self) -> FoldedLatentInjection:
        """This injection with its affine part folded into one matrix (see
        :class:`FoldedLatentInjection`): a snapshot of the current parameters."""
        return FoldedLatentInjection(self)


class FoldedLatentInjection(nn.Module):
    """A :class:`LatentInjection` whose affine part is one matrix: ``u = GN(x Mᵀ + c)``.

    The linear layer, the bilinear upsampling and the conv are all affine in x, so
    together they are x ↦ M x + c with M of shape (C·H·W, D) and c = the affine part at
    x = 0. Evaluating them as one (B, D) × (D, C·H·W) product (and its transpose for the
    vector-Jacobian product in x) takes D multiply-adds per output entry against the
    conv's 9·C, 4.5× fewer for the shipped decoder (D = 64, C = 32), and skips the
    upsampling; JIIO evaluates the injection and its VJP at every iteration because x
    changes, where a forward solve at a fixed x computes it once.

    M and c are computed in float64 from the injection's parameters at construction and
    stored detached, in the parameters' dtype: a snapshot for solves that take no
    gradient with respect to the parameters (inference, training's inner solve). Fold
    again after the parameters change. The GroupNorm is the injection's own module.

    Args:
        injection: the :class:`LatentInjection` to fold.

    Shapes:
        x: (B, D) → u: (B, C, H, W).
    """

    weight: Tensor
    bias: Tensor

    def __init__(self, injection: LatentInjection) -> None:
        super().__init__()
        self.latent_dim = injection.latent_dim
        self.channels = injection.channels
        self.spatial_size: tuple[int, int] = injection.spatial_size
        self.norm = injection.norm
        dtype = injection.linear.weight.dtype
        device = injection.linear.weight.device
        with torch.no_grad():
            wide = copy.deepcopy(injection).to(torch.float64)
            basis = torch.eye(self.latent_dim, device=device, dtype=torch.float64)
            offset = wide.affine_part(torch.zeros_like(basis[:1]))
            columns = (wide.affine_part(basis) - offset).flatten(1)  # (D, C·H·W): row j is M e_j
        self.register_buffer("weight", columns.to(dtype), persistent=False)
        self.register_buffer("bias", offset.flatten().to(dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Map x (B, D) to u (B, C, H, W), as the folded :class:`LatentInjection` does."""
        _check_latent(x, self.latent_dim)
        flat = torch.addmm(self.bias, x, self.weight)
        return self.norm(flat.view(x.shape[0], self.channels, *self.spatial_size))


def _check_latent(x: Tensor, latent_dim: int) -> None:
    if x.ndim != 2 or x.shape[1] != latent_dim:
        raise ValueError(
            f"LatentInjection expects x of shape (B, {latent_dim}), got {tuple(x.shape)}"
        )


class ImageInjection(nn.Module):
    """Inject an image: ``u = GN(conv₃ₓ₃,stride s(x))``.

    Args:
        in_channels: c, channels of the image.
        channels: C, channels of u.
        stride: s, 1 or 2; u has spatial size (⌈H/s⌉, ⌈W/s⌉).
        groups: GroupNorm groups; must divide C.
        image_size: (H, W) (or one int for square images) of the images this injection
            will see. Needed for :attr:`spatial_size`, which a cell uses to build its
            initial state; when given, ``forward`` also checks the input against it.

    Shapes:
        x: (B, c, H, W) → u: (B, C, ⌈H/s⌉, ⌈W/s⌉).

    Attributes:
        channels: C.
        stride: s.
        image_size: (H, W) or None.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        groups: int = 8,
        image_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        check_positive("in_channels", in_channels)
        check_groups(channels, groups)
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.in_channels = in_channels
        self.channels = channels
        self.stride = stride
        self.image_size: tuple[int, int] | None = (
            None if image_size is None else pair(image_size, "image_size")
        )
        self.conv = conv3x3(in_channels, channels, stride=stride, bias=True)
        self.norm = nn.GroupNorm(groups, channels)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size (⌈H/s⌉, ⌈W/s⌉) of u for an image of size (H, W)."""
        # A 3×3 conv with padding 1 gives ⌊(H − 1)/s⌋ + 1 = ⌈H/s⌉ rows.
        return (-(-height // self.stride), -(-width // self.stride))

    @property
    def spatial_size(self) -> tuple[int, int]:
        """Spatial size of u for the configured ``image_size``.

        Raises:
            RuntimeError: when the injection was built without ``image_size``.
        """
        if self.image_size is None:
            raise RuntimeError("ImageInjection was built without image_size")
        return self.output_size(*self.image_size)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Per-sample shape of u, (C, H', W'), for the configured ``image_size``."""
        return (self.channels, *self.spatial_size)

    def forward(self, x: Tensor) -> Tensor:
        """Map images x (B, c, H, W) to u (B, C, H', W')."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ImageInjection expects images of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        if self.image_size is not None and tuple(x.shape[2:]) != self.image_size:
            raise ValueError(
                f"ImageInjection was built for {self.image_size[0]}×{self.image_size[1]} "
                f"images, got {x.shape[2]}×{x.shape[3]}"
            )
        return self.norm(self.conv(x))
