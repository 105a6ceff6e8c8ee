"""Fréchet distance between two sets of feature vectors (FD on classifier features).

Each set is summarised by a Gaussian with its sample mean μ and sample covariance Σ
(normalised by N − 1), and the distance is the squared 2-Wasserstein distance between
those Gaussians:

    FD = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}).

The features come from this project's own classifiers, so scores are comparable only
between runs that use the same feature extractor. This is *not* FID: FID is defined on
Inception-v3 pool features, and numbers computed here must not be reported as FID.

Both matrix square roots are taken with symmetric eigendecompositions in float64: Σ_a and
the product Σ_a^{1/2} Σ_b Σ_a^{1/2} are symmetric positive semi-definite, so their square
roots are V diag(√λ) Vᵀ, with round-off negative eigenvalues clamped to zero. Only the
trace of the second root is needed, which is Σ √λ.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_statistics"]


def _check_features(feats: Tensor, name: str) -> None:
    if feats.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(feats.shape)}")
    if feats.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 feature vectors for a covariance")
    if not bool(torch.isfinite(feats).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def feature_statistics(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean (D,) and unbiased sample covariance (D, D) of (N, D) features, float64."""
    _check_features(feats, "features")
    x = feats.to(torch.float64)
    mean = x.mean(dim=0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    return mean, cov


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root of a symmetric PSD (D, D) matrix, symmetrised against round-off."""
    eigvals, eigvecs = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def frechet_distance_from_statistics(
    mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor
) -> float:
    """Fréchet distance between Gaussians N(mean_a, cov_a) and N(mean_b, cov_b).

    Args:
        mean_a, mean_b: (D,) means.
        cov_a, cov_b: (D, D) symmetric positive semi-definite covariances.

    Returns:
        The distance as a Python float (≥ 0 up to round-off, which is clamped away).
    """
    dim = mean_a.shape[-1]
    for name, mean, cov in (("a", mean_a, cov_a), ("b", mean_b, cov_b)):
        if mean.shape != (dim,) or cov.shape != (dim, dim):
            raise ValueError(
                f"statistics of set {name} have shapes {tuple(mean.shape)} and "
                f"{tuple(cov.shape)}; expected ({dim},) and ({dim}, {dim})"
            )
    mean_a, cov_a = mean_a.to(torch.float64), cov_a.to(torch.float64)
    mean_b, cov_b = mean_b.to(torch.float64), cov_b.to(torch.float64)

    sqrt_a = _psd_sqrt(cov_a)
    middle = sqrt_a @ cov_b @ sqrt_a
    eigvals = torch.linalg.eigvalsh(0.5 * (middle + middle.T))
    trace_cross = eigvals.clamp_min(0).sqrt().sum()

    distance = (mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_cross
    # Identical sets give a tiny negative number from round-off; a distance is never < 0.
    return max(float(distance), 0.0)


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets (FD, not FID).

    Args:
        feats_a: (N, D) features of the first set, N ≥ 2.
        feats_b: (M, D) features of the second set, M ≥ 2.

    Returns:
        ``‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` as a float.
    """
    _check_features(feats_a, "feats_a")
    _check_features(feats_b, "feats_b")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"feature sets differ in dimension: {feats_a.shape[1]} vs {feats_b.shape[1]}"
        )
    mean_a, cov_a = feature_statistics(feats_a)
    mean_b, cov_b = feature_statistics(feats_b.to(feats_a.device))
    return frechet_distance_from_statistics(mean_a, cov_a, mean_b, cov_b)
