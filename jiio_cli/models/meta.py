"""Few-shot classifier: a FiLM-conditioned DEQ whose optimised input is a task context v."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from .base import DEQModel
from .config import ModelConfig
from .film import FiLMConvDEQCell
from .heads import ClassifierHead
from .injection import ImageInjection
from .layers import check_groups, check_positive

__all__ = ["FiLMClassifier", "MetaConfig"]


@dataclass(frozen=True)
class MetaConfig(ModelConfig):
    """Configuration of :class:`FiLMClassifier`.

    Attributes:
        context_dim: D, size of the task context v.
        ways: K, classes per episode (logits per image).
        channels: C, channels of the state z.
        image_channels: c, channels of the images.
        image_size: S, images are S×S.
        groups: GroupNorm groups; must divide C.
        weight_norm: weight-normalise the cell's convs.
        stride: stride s ∈ {1, 2} of the image injection; z is ⌈S/s⌉×⌈S/s⌉ per image.
    """

    context_dim: int = 64
    ways: int = 5
    channels: int = 32
    image_channels: int = 1
    image_size: int = 28
    groups: int = 8
    weight_norm: bool = False
    stride: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("context_dim", self.context_dim)
        check_positive("ways", self.ways)
        check_positive("image_channels", self.image_channels)
        check_positive("image_size", self.image_size)
        check_groups(self.channels, self.groups)
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")


class FiLMClassifier(DEQModel):
    """Meta-learning DEQ: z* = f(z*, v; images) ↦ logits over the episode's K ways.

    The images of an episode are bound with :meth:`bind`; the engine then optimises the
    context v (B, D) (e.g. on CE(support) + mean(v²)) with ``cell`` as f. Rows can be
    single images (z (B, C, H, W), logits (B, K)) or whole tasks of n images sharing one
    v (z (B, n, C, H, W), logits (B, n, K)); see
    :class:`~jiio_cli.models.film.FiLMConvDEQCell`.

    Args:
        config: the :class:`MetaConfig`.

    Attributes:
        config: the configuration.
        cell: :class:`~jiio_cli.models.film.FiLMConvDEQCell` with an
            :class:`~jiio_cli.models.injection.ImageInjection`.
        head: :class:`~jiio_cli.models.heads.ClassifierHead`, z ↦ logits (…, K).
    """

    kind: ClassVar[str] = "meta"
    config_class: ClassVar[type[ModelConfig]] = MetaConfig

    def __init__(self, config: MetaConfig | None = None) -> None:
        super().__init__()
        config = self._accept_config(config)
        injection = ImageInjection(
            config.image_channels,
            config.channels,
            stride=config.stride,
            groups=config.groups,
            image_size=config.image_size,
        )
        self.cell = FiLMConvDEQCell(
            config.channels,
            config.context_dim,
            injection,
            groups=config.groups,
            weight_norm=config.weight_norm,
        )
        self.head = ClassifierHead(config.channels, config.ways, config.groups)

    def bind(self, images: Tensor) -> FiLMConvDEQCell:
        """Bind the episode's images (B, c, S, S) or (B, n, c, S, S); returns the cell."""
        return self.cell.bind(images)

    def unbind(self) -> None:
        """Drop the bound images' injection."""
        self.cell.unbind()

    def features(self, z: Tensor) -> Tensor:
        """Pooled features (…, C) of z (…, C, H, W)."""
        return self.head.features(z)
