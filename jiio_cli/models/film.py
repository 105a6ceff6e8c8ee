"""A FiLM-conditioned conv DEQ cell whose optimised input is a context vector."""

from __future__ import annotations

from torch import Tensor, nn

from .block import ResidualBlock
from .film_base import FiLMCell
from .layers import injection_size

__all__ = ["FiLMConvDEQCell"]


class FiLMConvDEQCell(FiLMCell):
    """Conv DEQ cell ``z⁺ = f(z, v)`` modulated by a context vector v (FiLM).

    The images are fixed data, not optimised: :meth:`bind` computes their injection
    u = inj(images) once, and the optimised input x of the engine is the context
    v ∈ ℝᴰ. With ``[γ, β] = W v`` (a bias-free linear map ℝᴰ → ℝ²ᶜ)::

        y   = GN₁(relu(conv₁(z)))
        y   = GN₂(conv₂(y) + u)
        y   = (1 + γ) ⊙ y + β                 (per channel, after GN₂)
        out = GN₃(relu(z + y))

    The linear map has no bias, so v = 0 gives γ = β = 0 and the cell reduces *exactly*
    to the unmodulated :class:`~jiio_cli.models.cell.ConvDEQCell` block with the same
    u, at any point of training.

    Two layouts are accepted. Per image: z (B, C, H, W), v (B, D), images bound as
    (B, c, H₀, W₀). Per task: z (B, n, C, H, W), v (B, D), images bound as
    (B, n, c, H₀, W₀); each row is a task of n images sharing one context, which is what
    few-shot learning needs when the engine treats rows as independent problems. Either
    way the computation is per row.

    Args:
        channels: C, channels of z.
        context_dim: D, size of v.
        image_injection: module mapping images (N, c, H₀, W₀) to (N, C, H, W), e.g.
            :class:`~jiio_cli.models.injection.ImageInjection`; must expose ``channels``
            and ``spatial_size``.
        groups: GroupNorm groups; must divide C and ``hidden_channels``.
        weight_norm: weight-normalise the block's two convs.
        hidden_channels: channels between the block's convs; defaults to C.
        film_init_scale: W starts as N(0, (s/√D)²), so a context with unit-variance
            entries gives γ and β of standard deviation s. PyTorch's default (s ≈ 0.58)
            lets a random v drive some channels to 1 + γ ≈ 0, cutting them off from the
            image and slowing the untrained fixed-point iteration several-fold; s = 0.1
            keeps it contractive while v still moves every channel.

    Attributes:
        state_shape: per-row shape of z: ``bound.shape[1:]`` while images are bound,
            (C, H, W) otherwise.
        film: the linear map v ↦ [γ, β].
        block: the :class:`~jiio_cli.models.block.ResidualBlock`.
    """

    def __init__(
        self,
        channels: int,
        context_dim: int,
        image_injection: nn.Module,
        groups: int = 8,
        weight_norm: bool = False,
        hidden_channels: int | None = None,
        film_init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        inj_size = injection_size(image_injection, channels, "image injection")
        self.channels = channels
        self.image_injection = image_injection
        self.block = ResidualBlock(channels, hidden_channels, groups, weight_norm)
        self._init_film(context_dim, channels, film_init_scale)
        self._unbound_shape: tuple[int, ...] = (channels, *inj_size)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Per-row shape of z, (C, H, W) or (n, C, H, W) for bound task batches."""
        return self._unbound_shape if self._bound is None else tuple(self._bound[0].shape[1:])

    @property
    def bound(self) -> Tensor | None:
        """The bound image injection, (B, C, H, W) or (B, n, C, H, W), or None."""
        return None if self._bound is None else self._bound[0]

    @property
    def _data_name(self) -> str:
        return "images"

    def bind(self, images: Tensor) -> FiLMConvDEQCell:
        """Compute and store the injection of the images the cell will look at.

        The stored tensor keeps its autograd graph, so an outer loss can train the
        image injection; bind again after every parameter update (and per episode).

        Args:
            images: (B, c, H₀, W₀), or (B, n, c, H₀, W₀) for rows that are tasks of
                n images.

        Returns:
            ``self``, so that ``cell.bind(images)`` can be passed on directly.
        """
        if images.ndim == 5:
            batch, n = images.shape[:2]
            u = self.image_injection(images.flatten(0, 1))
            self._bound = (u.view(batch, n, *u.shape[1:]),)
        elif images.ndim == 4:
            self._bound = (self.image_injection(images),)
        else:
            raise ValueError(
                f"bind expects images (B, c, H, W) or (B, n, c, H, W), got {tuple(images.shape)}"
            )
        return self

    def apply_with(self, u: Tensor, z: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        """f(z, v) for the injection u (shaped like z); see the class docstring."""
        self._check_rows(u, z, x)
        scale, shift = self.modulation(x)
        if z.ndim == 4:
            return self.block(z, u, scale, shift)
        # Task rows: run the n images of a row as separate samples sharing one (γ, β).
        batch, n = z.shape[:2]
        scale = scale[:, None].expand(batch, n, -1).flatten(0, 1)
        shift = shift[:, None].expand(batch, n, -1).flatten(0, 1)
        out = self.block(z.flatten(0, 1), u.flatten(0, 1), scale, shift)
        return out.view(z.shape)
