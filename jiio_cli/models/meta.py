"""Few-shot classifier: a FiLM-conditioned DEQ whose optimised input is a task context v."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
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
        head_context: the context also carries a K×C offset of the read-out weights, so
            v = [v_film (D); v_head (K·C)] and logits_k = (w_k + v_head,k) · φ(z) + b_k.
            With it, adapting v fits a linear classifier on the DEQ features jointly
            with the FiLM modulation; without it, v only modulates the cell.
        prototype_head: the read-out is entirely the context's: v = [v_film (D);
            v_head (K·(C+1))] and logits_k = v_head,k · [φ(z); 1] (no learnt class
            weights, which mean nothing when classes are relabelled every episode). Each
            task starts from the prototype context (see :meth:`prototype_context`), where
            the read-out is the nearest-class-centroid rule, and adaptation moves v from
            there (as Proto-MAML initialises MAML's last layer from prototypes).
    """

    context_dim: int = 64
    ways: int = 5
    channels: int = 32
    image_channels: int = 1
    image_size: int = 28
    groups: int = 8
    weight_norm: bool = False
    stride: int = 2
    head_context: bool = False
    prototype_head: bool = False

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

    @property
    def context_size(self) -> int:
        """Size of the whole context v: D, plus K·(C+1) with ``prototype_head``, else
        plus K·C with ``head_context``."""
        c = self.config
        if c.prototype_head:
            return c.context_dim + c.ways * (c.channels + 1)
        return c.context_dim + (c.ways * c.channels if c.head_context else 0)

    def prototype_context(self, features: Tensor, labels: Tensor, ways: int) -> Tensor:
        """The starting context v₀ (B, context_size) of tasks under ``prototype_head``.

        With c_k the mean feature of class k's support images, the read-out rows are
        (w_k, b_k) = (2 c_k, −‖c_k‖²) for k < N and 0 for the unused rows, and v_film = 0.
        Then logits_k = −‖φ − c_k‖² + ‖φ‖²: the nearest-centroid rule.

        Args:
            features: support features φ (B, n, C) at v = 0.
            labels: (B, n) in 0..N−1.
            ways: N ≤ K.
        """
        c = self.config
        if not c.prototype_head:
            raise ValueError("prototype_context needs a model with prototype_head")
        batch = features.shape[0]
        onehot = torch.nn.functional.one_hot(labels, ways).to(features.dtype)  # (B, n, N)
        centroids = onehot.transpose(1, 2) @ features / onehot.sum(1).clamp_min(1)[..., None]
        rows = torch.cat([2 * centroids, -centroids.pow(2).sum(-1, keepdim=True)], dim=-1)
        head = features.new_zeros(batch, c.ways, c.channels + 1)
        head[:, :ways] = rows
        film = features.new_zeros(batch, c.context_dim)
        return torch.cat([film, head.flatten(1)], dim=1)

    def film_context(self, v: Tensor) -> Tensor:
        """The part (B, D) of v (B, context_size) that modulates the cell."""
        return v[:, : self.config.context_dim]

    def context_cell(self) -> Callable[[Tensor, Tensor], Tensor]:
        """f(z, v) of the bound images for the whole context v (B, context_size).

        The bound injection is captured (see
        :meth:`~jiio_cli.models.film.FiLMConvDEQCell.frozen`), so the map stays valid
        after the model is bound to other images.
        """
        frozen = self.cell.frozen()
        return lambda z, v: frozen(z, self.film_context(v))

    def logits(self, z: Tensor, v: Tensor, ways: int | None = None) -> Tensor:
        """Logits (B, n, N) of task states z (B, n, C, H, W) under contexts v (B, context_size).

        N = ``ways`` ≤ K takes the first N of the K outputs (default K).
        """
        c = self.config
        ways = c.ways if ways is None else ways
        features = self.head.features(z)  # (B, n, C)
        if c.prototype_head:
            rows = v[:, c.context_dim :].view(v.shape[0], c.ways, c.channels + 1)
            logits = features @ rows[..., :-1].transpose(1, 2) + rows[..., -1].unsqueeze(1)
            return logits[..., :ways]
        logits = self.head.linear(features)
        if c.head_context:
            offset = v[:, c.context_dim :].view(v.shape[0], c.ways, c.channels)
            logits = logits + features @ offset.transpose(1, 2)
        return logits[..., :ways]

    def bind(self, images: Tensor) -> FiLMConvDEQCell:
        """Bind the episode's images (B, c, S, S) or (B, n, c, S, S); returns the cell."""
        return self.cell.bind(images)

    def unbind(self) -> None:
        """Drop the bound images' injection."""
        self.cell.unbind()

    def features(self, z: Tensor) -> Tensor:
        """Pooled features (…, C) of z (…, C, H, W)."""
        return self.head.features(z)
