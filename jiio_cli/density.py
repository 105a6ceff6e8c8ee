"""Gaussian mixture density over latent vectors, fitted by expectation-maximisation.

The mixture has K components with full covariances:

    p(x) = Σ_k w_k N(x; μ_k, Σ_k),   x ∈ R^D,   w_k ≥ 0,   Σ_k w_k = 1.

Fitting (:func:`fit_gmm`) on latents (N, D):

1. **Initialisation.** Greedy k-means++ seeding (Arthur & Vassilvitskii 2007: each next
   centre is drawn with probability proportional to its squared distance to the nearest
   chosen centre; the greedy variant draws 2 + ⌊ln K⌋ candidates and keeps the best),
   then every point is assigned to its nearest centre and one M-step turns those hard
   assignments into weights, means and covariances. ``init="random"`` draws the K
   centres uniformly without replacement instead.
2. **EM.** The E-step computes log responsibilities
   log r_nk = log w_k + log N(x_n; μ_k, Σ_k) − logsumexp_j(log w_j + log N(x_n; μ_j, Σ_j)),
   so no density is ever exponentiated before normalisation. The M-step sets
   N_k = Σ_n r_nk, w_k = N_k / N, μ_k = Σ_n r_nk x_n / N_k and
   Σ_k = Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ / N_k + ε I.
   It stops when the mean log-likelihood improves by less than ``tol`` per iteration, or
   after ``iterations`` iterations. With ``restarts`` > 1 the whole fit is repeated from
   fresh seeds and the one with the highest mean log-likelihood is kept.

The ridge ε (as scikit-learn's ``reg_covar``) keeps every Σ_k positive definite, even for
a component sitting on fewer than D + 1 points. By default it is relative to the data:
ε = max(1e-4 · mean_d Var(x_d), 1e-6), so it scales with the latents; passing
``reg_covar`` sets an absolute ε instead.

A component whose responsibilities sum to less than one point (N_k < 1) has collapsed;
it is re-seeded at the point the current mixture explains worst, with the covariance of
the whole data set, and EM continues (that iteration is not counted for convergence).

All arithmetic is float64 on the device of the latents; the fitted parameters stay
float64 so that they round-trip through a checkpoint without loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_REG_ABSOLUTE",
    "DEFAULT_REG_RELATIVE",
    "GaussianMixture",
    "fit_gmm",
]

DEFAULT_REG_RELATIVE = 1e-4
"""Default ridge on covariance diagonals, as a fraction of the mean per-dimension variance."""

DEFAULT_REG_ABSOLUTE = 1e-6
"""Floor of the default ridge, for data with (nearly) zero variance."""

_PARAM_NAMES = ("weights", "means", "covariances")
_LOG_2PI = math.log(2 * math.pi)


def _generator_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    # Random draws happen where the generator lives and are then moved, so a CPU generator
    # gives the same fit on every device.
    return generator.device if generator is not None else fallback


@dataclass(frozen=True)
class GaussianMixture:
    """A fitted Gaussian mixture.

    Attributes:
        weights: (K,) mixing weights, non-negative, summing to 1.
        means: (K, D) component means.
        covariances: (K, D, D) symmetric positive-definite component covariances (ridge
            already included).
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor

    def __post_init__(self) -> None:
        _check_shapes(self.weights, self.means, self.covariances)

    @property
    def components(self) -> int:
        """Number of components K."""
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        """Dimension D of the modelled vectors."""
        return self.means.shape[1]

    def to(self, device: torch.device | str) -> GaussianMixture:
        """The same mixture with its parameters on ``device``."""
        return GaussianMixture(
            self.weights.to(device), self.means.to(device), self.covariances.to(device)
        )

    def _cholesky(self) -> Tensor:
        factor, info = torch.linalg.cholesky_ex(self.covariances.to(torch.float64))
        if bool((info != 0).any()):
            bad = torch.nonzero(info).flatten().tolist()
            raise ValueError(f"covariances of components {bad} are not positive definite")
        return factor

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density log p(x_n) of each row of ``x``.

        Args:
            x: (N, D) points.

        Returns:
            (N,) log densities, computed in float64 and returned in the floating dtype of
            ``x`` (float64 for integer input).
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (N, {self.dim}), got {tuple(x.shape)}")
        joint = _log_joint(
            x.to(self.means.device, torch.float64),
            self.weights.to(torch.float64),
            self.means.to(torch.float64),
            self._cholesky(),
        )
        out = torch.logsumexp(joint, dim=1)
        out_dtype = x.dtype if x.is_floating_point() else torch.float64
        return out.to(device=x.device, dtype=out_dtype)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw ``n`` points: a component k ~ Categorical(w), then μ_k + L_k z, z ~ N(0, I).

        L_k is the Cholesky factor of Σ_k. The draws are made on the generator's device
        (or the parameters' device without one) and returned on the parameters' device.

        Returns:
            (n, D) samples in ``dtype`` (default: the dtype of ``means``).
        """
        if n < 0:
            raise ValueError(f"number of samples must be non-negative, got {n}")
        device = self.means.device
        draw_on = _generator_device(generator, device)
        weights = self.weights.to(draw_on, torch.float64)
        if n == 0:
            labels = torch.zeros(0, dtype=torch.long, device=draw_on)
        else:
            labels = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, device=draw_on, dtype=torch.float64)
        labels, noise = labels.to(device), noise.to(device)
        factor = self._cholesky()
        points = self.means.to(torch.float64)[labels] + torch.einsum(
            "nij,nj->ni", factor[labels], noise
        )
        return points.to(dtype or self.means.dtype)

    def to_tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """The parameters as named tensors, for a safetensors checkpoint.

        Keys are ``prefix`` followed by ``weights``, ``means`` and ``covariances`` (the
        prefix is used verbatim, so pass e.g. ``"prior."`` for dotted names). Tensors are
        contiguous CPU copies.
        """
        return {
            f"{prefix}{name}": getattr(self, name).detach().cpu().contiguous().clone()
            for name in _PARAM_NAMES
        }

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], prefix: str = "") -> GaussianMixture:
        """Rebuild a mixture from :meth:`to_tensors` output (other keys are ignored).

        Raises:
            ValueError: a key is missing, the shapes disagree, a value is not finite,
                the weights are not a distribution, or a covariance is not positive
                definite.
        """
        missing = [f"{prefix}{name}" for name in _PARAM_NAMES if f"{prefix}{name}" not in tensors]
        if missing:
            raise ValueError(f"Gaussian mixture tensors missing: {', '.join(missing)}")
        weights, means, covariances = (
            tensors[f"{prefix}{name}"].to(torch.float64) for name in _PARAM_NAMES
        )
        mixture = cls(weights, means, covariances)
        for name in _PARAM_NAMES:
            if not bool(torch.isfinite(getattr(mixture, name)).all()):
                raise ValueError(f"Gaussian mixture tensor {prefix}{name} has non-finite values")
        if bool((weights < 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(
                f"Gaussian mixture tensor {prefix}weights must be non-negative and sum to 1"
            )
        mixture._cholesky()
        return mixture


def _check_shapes(weights: Tensor, means: Tensor, covariances: Tensor) -> tuple[int, int]:
    if weights.dim() != 1 or means.dim() != 2 or covariances.dim() != 3:
        raise ValueError(
            "Gaussian mixture parameters must have shapes (K,), (K, D), (K, D, D); got "
            f"{tuple(weights.shape)}, {tuple(means.shape)}, {tuple(covariances.shape)}"
        )
    k, d = means.shape
    if weights.shape[0] != k or covariances.shape != (k, d, d) or k == 0:
        raise ValueError(
            f"inconsistent Gaussian mixture shapes: weights {tuple(weights.shape)}, "
            f"means {tuple(means.shape)}, covariances {tuple(covariances.shape)}"
        )
    return k, d


def _log_joint(x: Tensor, weights: Tensor, means: Tensor, factor: Tensor) -> Tensor:
    """log w_k + log N(x_n; μ_k, L_k L_kᵀ) as an (N, K) matrix.

    Args:
        x: (N, D) points; weights (K,); means (K, D); factor (K, D, D) lower Cholesky.
    """
    d = x.shape[1]
    columns = []
    # One component at a time keeps memory at O(N·D) instead of O(N·K·D).
    for k in range(means.shape[0]):
        diff = (x - means[k]).T  # (D, N)
        whitened = torch.linalg.solve_triangular(factor[k], diff, upper=False)
        mahalanobis = whitened.pow(2).sum(dim=0)
        log_det = 2 * factor[k].diagonal().log().sum()
        columns.append(-0.5 * (d * _LOG_2PI + log_det + mahalanobis))
    log_weights = weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
    return torch.stack(columns, dim=1) + log_weights


def _m_step(x: Tensor, resp: Tensor, reg: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Weights (K,), means (K, D), covariances (K, D, D) and counts N_k (K,) from (N, K)."""
    counts = resp.sum(dim=0)
    safe = counts.clamp_min(torch.finfo(x.dtype).tiny)
    means = (resp.T @ x) / safe[:, None]
    # Centred per component (not E[xxᵀ] − μμᵀ, which cancels badly), one component at a
    # time so memory stays O(N·D) as in the E-step.
    scatter = []
    for k in range(resp.shape[1]):
        diff = x - means[k]
        scatter.append((resp[:, k, None] * diff).T @ diff)
    covariances = torch.stack(scatter) / safe[:, None, None]
    covariances = 0.5 * (covariances + covariances.transpose(1, 2))
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    covariances = covariances + reg * eye
    weights = counts / counts.sum()
    return weights, means, covariances, counts


def _kmeanspp(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Indices (k,) of greedy k-means++ seeds among the rows of x.

    Each step draws 2 + ⌊ln k⌋ candidates with probability ∝ D(x)² and keeps the one that
    lowers Σ_n D(x_n)² the most (the variant scikit-learn uses): plain k-means++ puts two
    seeds in one of a few well-separated clusters a few percent of the time, and EM
    rarely recovers from that.
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    draw_on = _generator_device(generator, x.device)
    first = torch.randint(n, (1,), generator=generator, device=draw_on).to(x.device)
    chosen = [first]
    nearest = (x - x[first]).pow(2).sum(dim=1)
    for _ in range(1, k):
        total = nearest.sum()
        if float(total) <= 0:
            # Every point coincides with a centre already: any unchosen point will do.
            taken = torch.zeros(n, dtype=torch.bool, device=x.device)
            taken[torch.cat(chosen)] = True
            probs = (~taken).to(torch.float64)
        else:
            probs = nearest / total
        candidates = torch.multinomial(
            probs.to(draw_on), trials, replacement=True, generator=generator
        ).to(x.device)
        # (trials, N): squared distance to the nearest centre if that candidate were added.
        updated = torch.minimum(nearest, torch.cdist(x[candidates], x).pow(2))
        best = updated.sum(dim=1).argmin()
        chosen.append(candidates[best : best + 1])
        nearest = updated[best]
    return torch.cat(chosen)


def _initial_resp(x: Tensor, k: int, init: str, generator: torch.Generator | None) -> Tensor:
    """Hard (N, K) responsibilities from the seeds: each point to its nearest centre."""
    if init == "kmeans++":
        seeds = _kmeanspp(x, k, generator)
    else:
        draw_on = _generator_device(generator, x.device)
        seeds = torch.randperm(x.shape[0], generator=generator, device=draw_on)[:k]
        seeds = seeds.to(x.device)
    labels = torch.cdist(x, x[seeds]).argmin(dim=1)
    # Each seed owns itself, so no component starts empty even with duplicate points.
    labels[seeds] = torch.arange(k, device=x.device)
    return torch.nn.functional.one_hot(labels, k).to(x.dtype)


def _default_reg(x: Tensor) -> float:
    scale = float(x.var(dim=0, unbiased=False).mean())
    return max(DEFAULT_REG_RELATIVE * scale, DEFAULT_REG_ABSOLUTE)


def _reseed(
    x: Tensor,
    weights: Tensor,
    means: Tensor,
    covariances: Tensor,
    counts: Tensor,
    log_density: Tensor,
    reg: float,
) -> bool:
    """Re-seed collapsed components (N_k < 1) in place; True if any was re-seeded."""
    collapsed = torch.nonzero(counts < 1.0).flatten()
    if collapsed.numel() == 0:
        return False
    worst = torch.argsort(log_density)[: collapsed.numel()]
    data_cov = torch.cov(x.T, correction=0).reshape(x.shape[1], x.shape[1])
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    means[collapsed] = x[worst]
    covariances[collapsed] = data_cov + reg * eye
    weights[collapsed] = 1.0 / x.shape[0]
    weights /= weights.sum()
    return True


def _mean_log_likelihood(x: Tensor, weights: Tensor, means: Tensor, covariances: Tensor) -> float:
    joint = _log_joint(x, weights, means, torch.linalg.cholesky(covariances))
    return float(torch.logsumexp(joint, dim=1).mean())


def _fit_once(
    x: Tensor,
    components: int,
    iterations: int,
    tol: float,
    generator: torch.Generator | None,
    init: str,
    reg: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One initialisation followed by EM; weights (K,), means (K, D), covariances (K, D, D)."""
    resp = _initial_resp(x, components, init, generator)
    weights, means, covariances, _ = _m_step(x, resp, reg)
    previous = -math.inf
    for _ in range(iterations):
        # E-step.
        factor = torch.linalg.cholesky(covariances)
        joint = _log_joint(x, weights, means, factor)
        log_density = torch.logsumexp(joint, dim=1)
        current = float(log_density.mean())
        resp = (joint - log_density[:, None]).exp()
        # M-step.
        weights, means, covariances, counts = _m_step(x, resp, reg)
        reseeded = _reseed(x, weights, means, covariances, counts, log_density, reg)
        # The log-likelihood was evaluated before this M-step, so a re-seed only shows up
        # next iteration; comparing across it would stop on a spurious non-improvement.
        if not reseeded and current - previous < tol:
            break
        previous = -math.inf if reseeded else current
    return weights, means, covariances


def fit_gmm(
    latents: Tensor,
    components: int = 10,
    iterations: int = 100,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    init: Literal["kmeans++", "random"] = "kmeans++",
    reg_covar: float | None = None,
    restarts: int = 1,
) -> GaussianMixture:
    """Fit a K-component full-covariance Gaussian mixture to ``latents`` by EM.

    Args:
        latents: (N, D) vectors, N ≥ ``components``.
        components: number of components K.
        iterations: maximum number of EM iterations per start.
        tol: stop once the mean log-likelihood per point improves by less than this.
        generator: source of randomness for the initialisation; the fit is deterministic
            given its state. Draws happen on the generator's device.
        init: ``"kmeans++"`` seeding or ``"random"`` distinct data points.
        reg_covar: absolute ridge ε added to covariance diagonals; ``None`` means
            max(1e-4 · mean per-dimension variance, 1e-6) (see the module docstring).
        restarts: number of independent initialisations; the fit with the highest mean
            log-likelihood is kept (EM only finds a local optimum, and a start with two
            seeds in one cluster rarely leaves it).

    Returns:
        The fitted :class:`GaussianMixture`, float64 on the device of ``latents``.
    """
    if latents.dim() != 2:
        raise ValueError(f"latents must have shape (N, D), got {tuple(latents.shape)}")
    if components < 1:
        raise ValueError(f"components must be at least 1, got {components}")
    if latents.shape[0] < components:
        raise ValueError(f"cannot fit {components} components to {latents.shape[0]} latent vectors")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    x = latents.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("latents contain NaN or infinite values")
    reg = _default_reg(x) if reg_covar is None else float(reg_covar)
    if not reg > 0:
        raise ValueError(f"reg_covar must be positive, got {reg_covar}")

    best = _fit_once(x, components, iterations, tol, generator, init, reg)
    if restarts > 1:
        best_score = _mean_log_likelihood(x, *best)
        for _ in range(restarts - 1):
            params = _fit_once(x, components, iterations, tol, generator, init, reg)
            score = _mean_log_likelihood(x, *params)
            if score > best_score:
                best, best_score = params, score
    return GaussianMixture(*best)
