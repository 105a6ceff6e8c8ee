"""The Prototypical Network baseline's loss and predictions on episode batches.

One training step: embed the support and query images of each task together, classify
the queries by −‖e(q) − p_k‖² against the class prototypes p_k, and minimise the query
cross-entropy (Snell et al. 2017). Predictions take the nearest prototype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.data.episodes import EpisodeBatch
from jiio_cli.models import ProtoNet

__all__ = ["ProtoLoss", "protonet_loss", "protonet_predictions"]


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


def protonet_predictions(model: ProtoNet, episodes: EpisodeBatch) -> Tensor:
    """Predicted query labels (B, m): the nearest prototype (no gradient)."""
    with torch.no_grad():
        logits = model.logits(
            episodes.support, episodes.support_labels, episodes.query, episodes.ways
        )
    return logits.argmax(-1)
