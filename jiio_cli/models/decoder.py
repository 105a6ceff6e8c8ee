"""DEQ decoder: a latent code x drives a conv DEQ whose fixed point is read out as an image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from .base import DEQModel
from .cell import ConvDEQCell
from .config import ModelConfig
from .heads import ImageHead
from .injection import LatentInjection
from .layers import check_groups, check_positive

__all__ = ["DEQDecoder", "DecoderConfig"]


@dataclass(frozen=True)
class DecoderConfig(ModelConfig):
    """Configuration of :class:`DEQDecoder`.

    Attributes:
        latent_dim: D, size of the latent code x.
        channels: C, channels of the state z.
        image_channels: c, channels of the decoded image.
        image_size: S, the image is S×S.
        groups: GroupNorm groups; must divide C.
        weight_norm: weight-normalise the cell's convs.
        half_resolution: keep z at ⌈S/2⌉×⌈S/2⌉ (4× cheaper cell) and upsample in the head.
    """

    latent_dim: int = 64
    channels: int = 32
    image_channels: int = 1
    image_size: int = 28
    groups: int = 8
    weight_norm: bool = False
    half_resolution: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("latent_dim", self.latent_dim)
        check_positive("image_channels", self.image_channels)
        check_positive("image_size", self.image_size)
        check_groups(self.channels, self.groups)

    @property
    def state_size(self) -> int:
        """Side of the square state z: S, or ⌈S/2⌉ at half resolution."""
        return math.ceil(self.image_size / 2) if self.half_resolution else self.image_size


class DEQDecoder(DEQModel):
    """Generative DEQ: x (B, D) ↦ z* = f(z*, x) ↦ image h(z*) (B, c, S, S) in [0, 1].

    The model does not solve for z* itself: the engine does, with ``cell`` as f and
    ``init_state`` as the starting point; ``head`` maps the solution to pixels.

    Args:
        config: the :class:`DecoderConfig`.

    Attributes:
        config: the configuration.
        cell: :class:`~jiio_cli.models.cell.ConvDEQCell` with a
            :class:`~jiio_cli.models.injection.LatentInjection`; z is (B, C, s, s).
        head: :class:`~jiio_cli.models.heads.ImageHead`, z ↦ image.
    """

    kind: ClassVar[str] = "decoder"
    config_class: ClassVar[type[ModelConfig]] = DecoderConfig

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        config = self._accept_config(config)
        side = config.state_size
        injection = LatentInjection(
            config.latent_dim, config.channels, side, side, groups=config.groups
        )
        self.cell = ConvDEQCell(
            config.channels, injection, groups=config.groups, weight_norm=config.weight_norm
        )
        self.head = ImageHead(config.channels, config.image_channels, config.image_size)

    def inference_cell(self) -> ConvDEQCell:
        """``cell`` with its latent injection folded into one matrix: the same f (up to
        rounding), cheaper to evaluate and differentiate in x
        (:class:`~jiio_cli.models.injection.FoldedLatentInjection`).

        A snapshot of the current injection parameters that carries no gradient to
        them: for solves at test time and for training's inner solve, not for the loss
        that trains the decoder.
        """
        return self.cell.with_injection(self.cell.injection.folded())
