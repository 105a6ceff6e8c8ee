"""The Prototypical Network baseline's loss and predictions on episode batches.

One training step: embed the support and query images of each task together, classify
the queries by −‖e(q) − p_k‖² against the class prototypes p_k, and minimise the query
cross-entropy (Snell et al. 2017). Predictions take the nearest prototype, or with
``refine_steps`` > 0 the nearest prototype after soft k-means on the task's queries (Ren
et al. 2018): the transductive yardstick for a meta-model whose inner problem sees the
queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.data.episodes import EpisodeBatch
from jiio_cli.models import ProtoNet
from jiio_cli.models.meta import class_means
from jiio_cli.models.soft_kmeans import class_counts, soft_kmeans_refine

__all__ = ["ProtoLoss", "protonet_loss", "protonet_predictions", "soft_kmeans_prototypes"]


@dataclass
class ProtoLoss:
    """A step's loss (differentiable), its value and the query accuracy."""

    loss: Tensor
    query_ce: float
    query_accuracy: float


def protonet_loss(model: ProtoNet, episodes: EpisodeBatch) -> ProtoLoss:
    """Mean query cross-entropy of the episodes under the prototype read-out."""
    logits = model.logits(episodes.support, episodes.support_labels, episodes.query, episodes.ways)
    ce = F.cross_entropy(logits.flatten(0, 1), episodes.query_labels.flatten())
    accuracy = float((logits.argmax(-1) == episodes.query_labels).float().mean())
    return ProtoLoss(ce, float(ce.detach()), accuracy)


def soft_kmeans_prototypes(
    support: Tensor, labels: Tensor, query: Tensor, ways: int, steps: int
) -> Tensor:
    """Prototypes (B, N, E) refined on unlabelled queries by ``steps`` soft k-means steps.

    Start from the class means p_k of the support embeddings (B, n, E) with labels (B, n);
    each step weighs query q by w_qk = softmax_k(−‖e_q − p_k‖²) and sets
    p_k = (Σ_{i: y_i = k} e_i + Σ_q w_qk e_q) / (n_k + Σ_q w_qk)
    (:func:`~jiio_cli.models.soft_kmeans.soft_kmeans_refine` at scale 1). Zero steps: the
    means.
    """
    counts = class_counts(labels, ways, support.dtype)
    return soft_kmeans_refine(class_means(support, labels, ways), counts, query, 1.0, steps)


def protonet_predictions(model: ProtoNet, episodes: EpisodeBatch, refine_steps: int = 0) -> Tensor:
    """Predicted query labels (B, m): the nearest prototype (no gradient), after
    ``refine_steps`` soft k-means steps on the queries (0: the support means alone)."""
    with torch.no_grad():
        if refine_steps == 0:
            logits = model.logits(
                episodes.support, episodes.support_labels, episodes.query, episodes.ways
            )
            return logits.argmax(-1)
        n = episodes.support.shape[1]
        embedded = model.embed(torch.cat([episodes.support, episodes.query], dim=1))
        support, query = embedded[:, :n], embedded[:, n:]
        prototypes = soft_kmeans_prototypes(
            support, episodes.support_labels, query, episodes.ways, refine_steps
        )
        return torch.cdist(query, prototypes).argmin(dim=-1)
