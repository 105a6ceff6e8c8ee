"""The Prototypical Network baseline: a :class:`~jiio_cli.models.conv4.Conv4Encoder` and
squared Euclidean distances to class prototypes (the support embeddings' class means).

    logits_k(q) = −‖e(q) − p_k‖²,   p_k = mean of e(x) over the support images x of class k

It has no DEQ and nothing to adapt: it is the yardstick the meta-models are held against,
trained and evaluated by the same commands on the same episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .conv4 import Conv4Encoder, conv4_embedding_size
from .layers import check_positive
from .meta import class_means

__all__ = ["ProtoNet", "ProtoNetConfig", "prototype_logits"]


def prototype_logits(query: Tensor, support: Tensor, support_labels: Tensor, ways: int) -> Tensor:
    """−‖q − p_k‖² (B, m, N) for query embeddings (B, m, E) and support ones (B, n, E)
    with labels (B, n) in 0..N−1 (class means as prototypes)."""
    prototypes = class_means(support, support_labels, ways)
    # Expanded square, so the gradient stays finite where q = p (cdist's is not).
    return -(
        query.pow(2).sum(-1, keepdim=True)
        - 2 * query @ prototypes.transpose(1, 2)
        + prototypes.pow(2).sum(-1)[:, None, :]
    )


@dataclass(frozen=True)
class ProtoNetConfig(ModelConfig):
    """Configuration of :class:`ProtoNet`.

    Attributes:
        channels: filters of each of the four conv blocks.
        image_channels: c, channels of the images.
        image_size: S (28 in the standard network: a 64-d embedding).
        preprocess: how drawings are reduced to S×S (see
            :func:`~jiio_cli.data.omniglot.normalise_drawing`): ``resize`` or ``crop``.
    """

    channels: int = 64
    image_channels: int = 1
    image_size: int = 28
    preprocess: str = "crop"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("channels", self.channels)
        check_positive("image_channels", self.image_channels)
        conv4_embedding_size(self.channels, self.image_size)
        if self.preprocess not in ("resize", "crop"):
            raise ValueError(f"preprocess must be resize or crop, got {self.preprocess!r}")


class ProtoNet(nn.Module):
    """Prototypical Network: images (B, n, c, S, S) ↦ embeddings, queries ↦ −distances."""

    kind: ClassVar[str] = "protonet"
    config_class: ClassVar[type[ModelConfig]] = ProtoNetConfig

    def __init__(self, config: ProtoNetConfig | None = None) -> None:
        super().__init__()
        config = ProtoNetConfig() if config is None else config
        if not isinstance(config, ProtoNetConfig):
            raise TypeError(f"expected a ProtoNetConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Conv4Encoder(config.image_channels, config.channels)

    def embed(self, images: Tensor) -> Tensor:
        """Embeddings (B, n, E) of task rows of images (B, n, c, S, S)."""
        return self.encoder(images.flatten(0, 1)).view(*images.shape[:2], -1)

    def logits(self, support: Tensor, support_labels: Tensor, query: Tensor, ways: int) -> Tensor:
        """Query logits (B, m, N) of episodes: support (B, n, c, S, S) with labels (B, n),
        queries (B, m, c, S, S). Support and queries are embedded in one batch (one set
        of BatchNorm statistics in training mode)."""
        n = support.shape[1]
        e = self.embed(torch.cat([support, query], dim=1))
        return prototype_logits(e[:, n:], e[:, :n], support_labels, ways)
