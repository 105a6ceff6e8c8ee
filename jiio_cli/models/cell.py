"""A convolutional DEQ cell f(z, x) in the MDEQ style."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .block import ResidualBlock
from .layers import injection_size
from .zero_state import ZeroStateModule

__all__ = ["ConvDEQCell"]


class ConvDEQCell(ZeroStateModule):
    """Single-scale convolutional DEQ cell ``z⁺ = f(z, x)``.

    ``f(z, x) = ResidualBlock(z, inj(x))``, i.e. with u = inj(x)::

        y   = GN₁(relu(conv₁(z)))
        y   = GN₂(conv₂(y) + u)
        out = GN₃(relu(z + y))

    This is MDEQ's residual block (with relu before rather than after GN₁) on a single
    resolution. The convs start from N(0, 0.01²) weights and the injection ends in a
    GroupNorm, so the untrained cell is a contraction in z (plain iteration from zeros
    reaches a 1e-4 relative residual in about 30 steps on random inputs). The exception
    is an input whose u is spatially constant, such as an all-zero image through an
    :class:`~jiio_cli.models.injection.ImageInjection`: z* is then nearly constant too,
    GN₁ amplifies the tiny variations of conv₁(z) and the iteration is only marginally
    stable. Every operation is per sample.

    Args:
        channels: C, channels of the state z.
        injection: module mapping x (B, *x_shape) to u (B, C, H, W). It must expose
            ``channels`` (= C) and ``spatial_size`` (= (H, W)), as
            :class:`~jiio_cli.models.injection.LatentInjection` and
            :class:`~jiio_cli.models.injection.ImageInjection` do.
        groups: GroupNorm groups; must divide C and ``hidden_channels``.
        weight_norm: weight-normalise the block's two convs (not the injection).
        hidden_channels: channels between the block's convs; defaults to C.

    Shapes:
        z: (B, C, H, W), x: (B, *x_shape) → (B, C, H, W).

    Attributes:
        state_shape: per-sample shape of z, (C, H, W).
        injection: the injection module.
        block: the :class:`~jiio_cli.models.block.ResidualBlock`.
    """

    def __init__(
        self,
        channels: int,
        injection: nn.Module,
        groups: int = 8,
        weight_norm: bool = False,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        inj_size = injection_size(injection, channels, "injection")
        self.injection = injection
        self.block = ResidualBlock(channels, hidden_channels, groups, weight_norm)
        self.state_shape: tuple[int, ...] = (channels, *inj_size)

    def inject(self, x: Tensor) -> Tensor:
        """The injection u = inj(x), (B, C, H, W)."""
        return self.injection(x)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        """Apply f: z (B, C, H, W), x (B, *x_shape) → z⁺ (B, C, H, W)."""
        return self._step(z, self.injection(x))

    def with_fixed_input(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """z ↦ f(z, x) with u = inj(x) computed once (for solves at a fixed x)."""
        u = self.injection(x)
        return lambda z: self._step(z, u)

    def with_injection(self, injection: nn.Module) -> ConvDEQCell:
        """A cell with another injection that shares this cell's block and its parameters.

        For instance ``cell.with_injection(cell.injection.folded())`` is the same f with
        the latent injection folded into one matrix
        (:class:`~jiio_cli.models.injection.FoldedLatentInjection`).

        Raises:
            ValueError: when the injection's output does not have this cell's state shape.
        """
        shape = (getattr(injection, "channels", None), *getattr(injection, "spatial_size", ()))
        if shape != self.state_shape:
            raise ValueError(
                f"the injection gives {shape} but the cell's state has shape {self.state_shape}"
            )
        twin = ConvDEQCell.__new__(ConvDEQCell)
        nn.Module.__init__(twin)
        twin.injection = injection
        twin.block = self.block
        twin.state_shape = self.state_shape
        return twin

    def _step(self, z: Tensor, u: Tensor) -> Tensor:
        if z.shape != u.shape:
            raise ValueError(
                f"z has shape {tuple(z.shape)} but the injection gives {tuple(u.shape)}"
            )
        return self.block(z, u)
