"""Soft k-means refinement of class centroids on a task's unlabelled queries (Ren et al.
2018): the transductive step shared by the meta-model's read-out and the Prototypical
Network yardstick."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_counts", "soft_kmeans_refine", "squared_distances"]


def squared_distances(points: Tensor, centres: Tensor) -> Tensor:
    """‖p − c‖² (B, m, N) of points (B, m, E) to centres (B, N, E), expanded so that the
    gradient stays finite where p = c (``torch.cdist``'s is not)."""
    return (
        points.pow(2).sum(-1, keepdim=True)
        - 2 * points @ centres.transpose(1, 2)
        + centres.pow(2).sum(-1)[:, None, :]
    )


def class_counts(labels: Tensor, ways: int, dtype: torch.dtype) -> Tensor:
    """Images per class (B, N, 1) of labels (B, n) in 0..N−1: the support weights n_k of
    :func:`soft_kmeans_refine`."""
    return F.one_hot(labels, ways).to(dtype).sum(1)[..., None]


def soft_kmeans_refine(
    centroids: Tensor, counts: Tensor, query: Tensor, scale: Tensor | float, steps: int
) -> Tensor:
    """Centroids (B, N, E) after ``steps`` soft k-means steps on the queries (B, m, E).

    Each labelled class k starts at c_k, the mean of its n_k support points (``counts``
    (B, N, 1)), possibly shifted; each step weighs query q by
    w_qk = softmax_k(−s‖q − c_k‖²) and sets c_k = (n_k·c⁰_k + Σ_q w_qk q) / (n_k + Σ_q w_qk),
    c⁰ the starting centroids: the support points keep their weight, the queries join
    each class in proportion to how well it explains them. Differentiable; 0 steps
    returns the centroids.
    """
    anchor = centroids * counts
    for _ in range(steps):
        weights = (-scale * squared_distances(query, centroids)).softmax(dim=-1)  # (B, m, N)
        centroids = (anchor + weights.transpose(1, 2) @ query) / (
            counts + weights.sum(1)[..., None]
        )
    return centroids
