"""DEQ image classifier: the image x drives a conv DEQ whose fixed point is pooled into logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from .base import DEQModel
from .cell import ConvDEQCell
from .config import ModelConfig
from .heads import SpatialClassifierHead
from .injection import ImageInjection
from .layers import check_groups, check_positive

__all__ = ["ClassifierConfig", "DEQClassifier"]


@dataclass(frozen=True)
class ClassifierConfig(ModelConfig):
    """Configuration of :class:`DEQClassifier`.

    Attributes:
        num_classes: K, number of logits.
        image_channels: c, channels of the input image.
        image_size: S, the input image is S×S.
        channels: C, channels of the state z.
        groups: GroupNorm groups; must divide C.
        weight_norm: weight-normalise the cell's convs.
        stride: stride s ∈ {1, 2} of the image injection; z is ⌈S/s⌉×⌈S/s⌉.
        pool_grid: P, the read-out pools z to a P×P grid before its linear layer.
    """

    num_classes: int = 10
    image_channels: int = 1
    image_size: int = 28
    channels: int = 32
    groups: int = 8
    weight_norm: bool = False
    stride: int = 2
    pool_grid: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("num_classes", self.num_classes)
        check_positive("pool_grid", self.pool_grid)
        check_positive("image_channels", self.image_channels)
        check_positive("image_size", self.image_size)
        check_groups(self.channels, self.groups)
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")


class DEQClassifier(DEQModel):
    """Classifier DEQ: image x (B, c, S, S) ↦ z* = f(z*, x) ↦ logits h(z*) (B, K).

    The optimised input is the image itself (an adversarial attack moves x inside an
    ε-ball). The engine solves for z* with ``cell`` and ``init_state``.

    Args:
        config: the :class:`ClassifierConfig`.

    Attributes:
        config: the configuration.
        cell: :class:`~jiio_cli.models.cell.ConvDEQCell` with an
            :class:`~jiio_cli.models.injection.ImageInjection`; z is (B, C, S/s, S/s).
        head: :class:`~jiio_cli.models.heads.SpatialClassifierHead`, z ↦ logits (B, K).
    """

    kind: ClassVar[str] = "classifier"
    config_class: ClassVar[type[ModelConfig]] = ClassifierConfig

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        config = self._accept_config(config)
        injection = ImageInjection(
            config.image_channels,
            config.channels,
            stride=config.stride,
            groups=config.groups,
            image_size=config.image_size,
        )
        self.cell = ConvDEQCell(
            config.channels, injection, groups=config.groups, weight_norm=config.weight_norm
        )
        self.head = SpatialClassifierHead(config.channels, config.num_classes, config.pool_grid)

    def features(self, z: Tensor) -> Tensor:
        """Pooled features (B, C·P²) of z (B, C, H, W)."""
        return self.head.features(z)
