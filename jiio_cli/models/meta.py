"""Few-shot classifier: a FiLM-conditioned DEQ whose optimised input is a task context v."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DEQModel
from .config import ModelConfig
from .conv4 import Conv4Encoder, conv4_embedding_size
from .embedding_cell import FiLMEmbeddingCell
from .film import FiLMConvDEQCell
from .heads import ClassifierHead
from .injection import ImageInjection
from .layers import check_groups, check_positive
from .soft_kmeans import class_counts, soft_kmeans_refine, squared_distances

__all__ = ["READOUTS", "SUPPORT_LOSSES", "FiLMClassifier", "MetaConfig", "class_means"]


ENCODERS = ("injection", "conv4")
"""What the DEQ looks at: ``injection``, a conv state over the image bound by a strided
conv injection; ``conv4``, a 4-block conv encoder's embedding refined by a contractive
FiLM DEQ (:class:`~jiio_cli.models.embedding_cell.FiLMEmbeddingCell`)."""

PREPROCESSING = ("resize", "crop")
"""How drawings are reduced to S×S (see :func:`~jiio_cli.data.omniglot.normalise_drawing`)."""

READOUTS = ("head", "centroids")
"""How a :class:`FiLMClassifier` classifies queries at the adapted context."""

SUPPORT_LOSSES = ("head", "centroids", "pseudo-queries")
"""Which classifier's cross-entropy on the support set the context v is fitted to."""


def class_means(values: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Per-task class means (B, N, D) of values (B, n, D) with labels (B, n) in 0..N−1.

    A class with no image gets zeros.
    """
    onehot = F.one_hot(labels, ways).to(values.dtype)  # (B, n, N)
    return onehot.transpose(1, 2) @ values / onehot.sum(1).clamp_min(1)[..., None]


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
        readout: how queries are classified once v* is fitted. ``head``: the logits
            above at v*. ``centroids``: the support images' features at v* give one
            centroid c_k per class and logits_k(q) = −s·‖φ(q; v*) − c_k‖², with a learnt
            scale s > 0; the head (and its context part) then only serves the inner
            objective, as the task loss that moves the FiLM part of v. Checkpoints
            written before this option read as ``head``.
        support_loss: the classifier whose support cross-entropy the inner problem
            minimises over v. ``head``: the (context-offset) head's logits. ``centroids``
            (needs ``readout="centroids"``): the centroid read-out applied to the support
            images themselves, logits_ik = −s·‖φ(x_i; v) − c_k(v)‖² with c_k the class means
            of the support features at v; with one shot each image is its own centroid,
            so the loss log(1 + Σ_{k≠y_i} exp(−s‖φ_i − c_k‖²)) spreads the classes apart in
            feature space, and fitting v is the same kind of problem as classifying the
            queries. ``pseudo-queries`` (needs ``readout="centroids"``): each support
            image gets ``pseudo_copies`` elastically warped copies (about
            ``pseudo_warp`` pixels, a fixed draw per position in the row, so the
            objective is deterministic), and v minimises the copies' cross-entropy under
            the centroid read-out of the clean support images at v: the copies stand in
            for queries, other drawings of the same characters. ``pseudo_affine`` > 0
            draws each copy by a random affine jitter first (the way two drawers of a
            glyph differ) and ``pseudo_warp`` may then be 0 (no elastic warp).
            Checkpoints written before this option read as ``head``.
        metric_context: (needs ``readout="centroids"``) the context also carries C
            log-weights of the centroid read-out's distance, v = [...; v_metric (C)] and
            ‖φ(q) − c_k‖² becomes Σ_c exp(v_metric,c) (φ_c(q) − c_k,c)²: fitting v can
            re-weigh the feature channels for the task at hand. v_metric = 0 is the plain
            distance. Checkpoints written before this option read as False.
        pseudo_copies: jittered copies per support image (``pseudo-queries`` only).
        pseudo_warp: their elastic warp's size in pixels, 0 for none (``pseudo-queries``
            only).
        pseudo_affine: the strength of their affine jitter (see
            :class:`~jiio_cli.data.augment.Augmentation`), 0 for none; checkpoints
            written before this option read as 0.
        encoder: see :data:`ENCODERS`. With ``conv4``, ``channels`` is the encoder's
            filters, the state is the E-dimensional embedding (E = 64 for 28×28 images
            and 64 filters), ``hidden`` the refinement's width; the read-out must be
            ``centroids`` and the support loss ``centroids`` or ``pseudo-queries``.
            Checkpoints written before this option read as ``injection``.
        hidden: H, hidden width of the ``conv4`` model's DEQ refinement.
        preprocess: how drawings are reduced to S×S for this model (``resize`` or
            ``crop``); checkpoints written before this option read as ``resize``.
        transductive_weight: β ≥ 0 (needs ``readout="centroids"``). With β > 0 the task
            variable also carries one offset δ_k ∈ ℝᴱ per class, after the context (the
            centroids become c_k + δ_k), and the inner problem sees the task's unlabelled
            queries too: it adds β·mean_q(−log Σ_k exp(−s‖φ(q) − c_k − δ_k‖²)), the
            queries' negative log-likelihood under an equal-weight mixture centred on the
            class centroids, and ``offset_weight``·mean_k ‖δ_k‖². Minimising it moves
            each centroid towards the queries it explains (soft k-means, fitted by JIIO
            jointly with the DEQ states and the FiLM code). 0 (the default, and what
            checkpoints written before this option read as): the support alone.
        offset_weight: the offsets' penalty weight (with ``transductive_weight`` > 0).
        soft_kmeans_steps: K ≥ 0 (needs ``readout="centroids"``). With K > 0 the query
            read-out is transductive: before classifying, the class centroids are refined
            by K soft k-means steps on the task's query features at the fitted context
            (:func:`~jiio_cli.models.soft_kmeans.soft_kmeans_refine`, at the read-out's
            distance scale s). It changes the read-out only, never the inner problem. 0
            (the default, and what checkpoints written before this option read as): the
            support's centroids alone.
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
    readout: str = "head"
    support_loss: str = "head"
    metric_context: bool = False
    pseudo_copies: int = 2
    pseudo_warp: float = 1.0
    pseudo_affine: float = 0.0
    encoder: str = "injection"
    hidden: int = 128
    preprocess: str = "resize"
    transductive_weight: float = 0.0
    offset_weight: float = 0.01
    soft_kmeans_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {PREPROCESSING}, got {self.preprocess!r}")
        check_positive("hidden", self.hidden)
        if self.encoder == "conv4":
            conv4_embedding_size(self.channels, self.image_size)
            if self.readout != "centroids" or self.support_loss == "head" or self.head_context:
                raise ValueError(
                    "encoder 'conv4' needs readout 'centroids', a support loss other than "
                    "'head' and no head_context"
                )
        check_positive("context_dim", self.context_dim)
        check_positive("ways", self.ways)
        check_positive("image_channels", self.image_channels)
        check_positive("image_size", self.image_size)
        check_groups(self.channels, self.groups)
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.support_loss not in SUPPORT_LOSSES:
            raise ValueError(
                f"support_loss must be one of {SUPPORT_LOSSES}, got {self.support_loss!r}"
            )
        if self.support_loss != "head" and self.readout != "centroids":
            raise ValueError(f"support_loss {self.support_loss!r} needs readout 'centroids'")
        if self.metric_context and self.readout != "centroids":
            raise ValueError("metric_context needs readout 'centroids'")
        check_positive("pseudo_copies", self.pseudo_copies)
        if not 0 <= self.pseudo_warp <= 8:
            raise ValueError(f"pseudo_warp must be in [0, 8], got {self.pseudo_warp}")
        if not 0 <= self.pseudo_affine <= 2:
            raise ValueError(f"pseudo_affine must be in [0, 2], got {self.pseudo_affine}")
        if self.pseudo_warp == 0 and self.pseudo_affine == 0:
            raise ValueError("pseudo_warp and pseudo_affine are both 0: the copies would be exact")
        if self.transductive_weight < 0:
            raise ValueError(f"transductive_weight must be >= 0, got {self.transductive_weight}")
        if self.transductive_weight > 0 and self.readout != "centroids":
            raise ValueError("transductive_weight > 0 needs readout 'centroids'")
        if self.offset_weight <= 0:
            raise ValueError(f"offset_weight must be > 0, got {self.offset_weight}")
        if self.soft_kmeans_steps < 0:
            raise ValueError(f"soft_kmeans_steps must be >= 0, got {self.soft_kmeans_steps}")
        if self.soft_kmeans_steps > 0 and self.readout != "centroids":
            raise ValueError("soft_kmeans_steps > 0 needs readout 'centroids'")


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
        if config.encoder == "conv4":
            self.encoder = Conv4Encoder(config.image_channels, config.channels)
            self.cell = FiLMEmbeddingCell(
                conv4_embedding_size(config.channels, config.image_size),
                config.hidden,
                config.context_dim,
            )
            self.log_distance_scale = nn.Parameter(torch.zeros(()))
            return
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
        if config.readout == "centroids":
            # log s: distances of pooled features are O(1) at initialisation.
            self.log_distance_scale = nn.Parameter(torch.zeros(()))

    @property
    def context_size(self) -> int:
        """Size of the whole context v: D, plus K·C with ``head_context``, plus C with
        ``metric_context``."""
        c = self.config
        head = c.ways * c.channels if c.head_context else 0
        return c.context_dim + head + (self.feature_dim if c.metric_context else 0)

    @property
    def feature_dim(self) -> int:
        """Size of the read-out features: C, or E for the ``conv4`` encoder."""
        c = self.config
        if c.encoder == "conv4":
            return conv4_embedding_size(c.channels, c.image_size)
        return c.channels

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
        logits = self.head.linear(features)
        if c.head_context:
            head = v[:, c.context_dim : c.context_dim + c.ways * c.channels]
            offset = head.reshape(v.shape[0], c.ways, c.channels)
            logits = logits + features @ offset.transpose(1, 2)
        return logits[..., :ways]

    def metric_root_weights(self, v: Tensor | None) -> Tensor | None:
        """√w = exp(v_metric / 2) (B, C), the square roots of the centroid distance's
        channel weights w = exp(v_metric), or None (plain distance) without
        ``metric_context`` or without v."""
        if v is None or not self.config.metric_context:
            return None
        end = self.context_size
        return (0.5 * v[:, end - self.feature_dim : end]).exp()

    def centroid_offsets(self, v: Tensor | None, ways: int) -> Tensor | None:
        """The class-centroid offsets δ (B, N, E) that a task variable v
        (B, context_size + N·E) carries after its context, or None when v is the
        context alone (see ``transductive_weight`` in :class:`MetaConfig`)."""
        if v is None or v.shape[1] == self.context_size:
            return None
        expected = self.context_size + ways * self.feature_dim
        if v.shape[1] != expected:
            raise ValueError(f"task variable of size {v.shape[1]}: expected {expected} entries")
        return v[:, self.context_size :].reshape(v.shape[0], ways, self.feature_dim)

    def centroid_logits(
        self,
        query_z: Tensor,
        support_z: Tensor,
        support_labels: Tensor,
        ways: int,
        v: Tensor | None = None,
        soft_kmeans_steps: int = 0,
    ) -> Tensor:
        """Logits (B, m, N) = −s·‖φ(q) − c_k‖² of the centroid read-out.

        Args:
            query_z: query states (B, m, C, H, W); support_z: support states (B, n, C, H, W),
                both at the task's context.
            support_labels: (B, n) in 0..N−1; each class needs at least one image.
            ways: N.
            v: the task's context (B, context_size); with ``metric_context`` its last C
                entries weigh the distance's channels; a task variable with centroid
                offsets after the context shifts the centroids (see :class:`MetaConfig`).
            soft_kmeans_steps: refine the centroids by this many soft k-means steps on
                these queries first (the transductive read-out; 0 for the support loss,
                whose "queries" are the support's own copies).
        """
        query = self.features(query_z)
        centroids = class_means(self.features(support_z), support_labels, ways)
        offsets = self.centroid_offsets(v, ways)
        if offsets is not None:
            centroids = centroids + offsets
        root = self.metric_root_weights(v)
        if root is not None:
            # Σ_c w_c (q_c − c_c)² is the plain distance between √w ⊙ q and √w ⊙ c.
            query, centroids = query * root[:, None, :], centroids * root[:, None, :]
        scale = self.log_distance_scale.exp() if self.config.readout == "centroids" else 1.0
        if soft_kmeans_steps > 0:
            counts = class_counts(support_labels, ways, query.dtype)
            centroids = soft_kmeans_refine(centroids, counts, query, scale, soft_kmeans_steps)
        return -scale * squared_distances(query, centroids)

    def readout_steps(self, override: int | None = None) -> int:
        """Soft k-means steps of the centroid read-out: ``override``, or with None the
        model's own (``MetaConfig.soft_kmeans_steps``)."""
        return self.config.soft_kmeans_steps if override is None else override

    def readout_logits(
        self,
        z: Tensor,
        v: Tensor,
        ways: int,
        support_labels: Tensor | None = None,
        *,
        soft_kmeans_steps: int | None = None,
    ) -> Tensor:
        """Query logits (B, m, N) by the model's read-out, at contexts v (B, context_size).

        With the ``head`` read-out z holds the query states (B, m, C, H, W). With
        ``centroids`` it holds a task row's support states first, then its queries
        (B, n + m, C, H, W), ``support_labels`` (B, n) say which class each support
        state is, and the centroids take ``soft_kmeans_steps`` steps on the queries
        (None: ``MetaConfig.soft_kmeans_steps``).
        """
        if self.config.readout == "head":
            return self.logits(z, v, ways)
        if support_labels is None:
            raise ValueError("the centroids read-out needs the support images and labels")
        n = support_labels.shape[1]
        steps = self.readout_steps(soft_kmeans_steps)
        return self.centroid_logits(z[:, n:], z[:, :n], support_labels, ways, v, steps)

    def bind(self, images: Tensor) -> FiLMConvDEQCell | FiLMEmbeddingCell:
        """Bind the episode's images (B, c, S, S) or (B, n, c, S, S); returns the cell.

        The ``conv4`` encoder takes task rows (B, n, c, S, S), or their embeddings
        (B, n, E) from :meth:`embed`, and binds the embeddings.
        """
        if self.config.encoder == "conv4":
            if images.ndim == 3:  # already embedded by :meth:`embed`
                return self.cell.bind(images)
            return self.cell.bind(self.embed(images))
        return self.cell.bind(images)

    def embed(self, images: Tensor) -> Tensor:
        """Embeddings (B, n, E) of task rows (B, n, c, S, S) by the ``conv4`` encoder.

        :meth:`bind` accepts them in place of the images, so that one encoder pass can
        serve several solves on the same images (what a meta-training step does).
        """
        if self.config.encoder != "conv4":
            raise ValueError("only the conv4 encoder embeds images ahead of binding")
        if images.ndim != 5:
            raise ValueError(f"embed expects images (B, n, c, S, S), got {tuple(images.shape)}")
        return self.encoder(images.flatten(0, 1)).view(*images.shape[:2], -1)

    def unbind(self) -> None:
        """Drop the bound images' injection."""
        self.cell.unbind()

    def features(self, z: Tensor) -> Tensor:
        """Pooled features (…, C) of z (…, C, H, W); the state itself for ``conv4``."""
        if self.config.encoder == "conv4":
            return z
        return self.head.features(z)
