"""Gaussian mixture density over latent vectors: fitted by scikit-learn, kept and sampled in torch.

The mixture has K components with full covariances:

    p(x) = Σ_k w_k N(x; μ_k, Σ_k),   x ∈ R^D,   w_k ≥ 0,   Σ_k w_k = 1.

**Fitting** (:func:`fit_gmm`) is scikit-learn's ``GaussianMixture`` (expectation-maximisation
with full covariances) on the latents moved to the host as float64. Its options map as:
``init="kmeans++"`` → greedy k-means++ seeds (``init_params="k-means++"``), ``"random"`` →
K distinct data points (``"random_from_data"``); ``iterations`` → ``max_iter`` (a budget:
stopping at it is not an error, so the library's ``ConvergenceWarning`` is silenced);
``tol`` → ``tol`` on the gain in mean log-likelihood per point; ``reg_covar`` → the ridge
ε I added to every Σ_k. By default ε is relative to the data,
ε = max(1e-4 · mean_d Var(x_d), 1e-6), so it scales with the latents. ``restarts`` fits
from independent seeds and keeps the mixture with the highest mean log-likelihood; the
starts are ranked here, by the final mixture's likelihood, rather than by the library's
``n_init``, which ranks them by the bound it computed before each start's last M-step.

**What stays in torch, and why.**

* The fitted parameters, as float64 tensors (``weights`` (K,), ``means`` (K, D),
  ``covariances`` (K, D, D), ridge included): they are what a safetensors checkpoint stores
  under a prefix (``density.`` in decoder checkpoints), unchanged from earlier versions, so
  checkpoints written before still load.
* :meth:`GaussianMixture.sample`: the codes feed the decoder on its device, and the draws
  come from a ``torch.Generator`` in a fixed order (component labels, then N(0, I) noise),
  so ``jiio sample --seed S`` keeps giving the same images from a given checkpoint.
  scikit-learn's sampler draws from NumPy's generator and would change every sample.
* :meth:`GaussianMixture.log_prob`: ``torch.distributions`` evaluates the density on the
  parameters' device, so codes on a GPU are scored where they are (say, as a prior inside
  an optimisation loop) without a round trip to the host.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch import distributions as D

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
_INIT_PARAMS = {"kmeans++": "k-means++", "random": "random_from_data"}
_SEED_BOUND = 2**31 - 1  # scikit-learn seeds are 32-bit


def _generator_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    # Random draws happen where the generator lives and are then moved, so a CPU generator
    # gives the same draws on every device.
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
        """(K, D, D) lower Cholesky factors L_k with L_k L_kᵀ = Σ_k, in float64."""
        factor, info = torch.linalg.cholesky_ex(self.covariances.to(torch.float64))
        if bool((info != 0).any()):
            bad = torch.nonzero(info).flatten().tolist()
            raise ValueError(f"covariances of components {bad} are not positive definite")
        return factor

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density log p(x_n) = logsumexp_k(log w_k + log N(x_n; μ_k, Σ_k)) of each row.

        Args:
            x: (N, D) points.

        Returns:
            (N,) log densities, computed in float64 on the parameters' device and returned
            on the device of ``x`` in its floating dtype (float64 for integer input).
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (N, {self.dim}), got {tuple(x.shape)}")
        mixture = D.MixtureSameFamily(
            D.Categorical(probs=self.weights.to(torch.float64)),
            D.MultivariateNormal(self.means.to(torch.float64), scale_tril=self._cholesky()),
        )
        out = mixture.log_prob(x.to(self.means.device, torch.float64))
        out_dtype = x.dtype if x.is_floating_point() else torch.float64
        return out.to(device=x.device, dtype=out_dtype)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw ``n`` points: a component k ~ Categorical(w), then μ_k + L_k z, z ~ N(0, I).

        L_k is the Cholesky factor of Σ_k. All n labels are drawn first, then the (n, D)
        noise, on the generator's device (or the parameters' device without one); the
        points are returned on the parameters' device.

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


def _default_reg(x: np.ndarray) -> float:
    scale = float(x.var(axis=0).mean())
    return max(DEFAULT_REG_RELATIVE * scale, DEFAULT_REG_ABSOLUTE)


def _library_seed(generator: torch.Generator | None) -> int:
    """A scikit-learn seed drawn from ``generator`` (torch's global generator without one)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(_SEED_BOUND, (1,), generator=generator, device=device))


def _fit_once(
    x: np.ndarray, components: int, iterations: int, tol: float, init: str, reg: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One start of scikit-learn's EM: weights (K,), means (K, D), covariances (K, D, D),
    and the mean log-likelihood per point of that mixture on ``x`` (N, D)."""
    # Imported here: scikit-learn takes a second to import and only fitting needs it.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as LibraryMixture

    model = LibraryMixture(
        n_components=components,
        covariance_type="full",
        tol=tol,
        reg_covar=reg,
        max_iter=iterations,
        init_params=_INIT_PARAMS[init],
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    return model.weights_, model.means_, model.covariances_, float(model.score(x))


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
    """Fit a K-component full-covariance Gaussian mixture to ``latents`` by EM (scikit-learn).

    Args:
        latents: (N, D) vectors, N ≥ max(``components``, 2).
        components: number of components K.
        iterations: maximum number of EM iterations per start (at least 1).
        tol: stop once the mean log-likelihood per point improves by less than this.
        generator: source of randomness: one 32-bit seed per start is drawn from it (from
            torch's global generator without one), so the fit is deterministic given its
            state. Draws happen on the generator's device.
        init: ``"kmeans++"`` seeding or ``"random"`` distinct data points.
        reg_covar: absolute ridge ε added to covariance diagonals; ``None`` means
            max(1e-4 · mean per-dimension variance, 1e-6) (see the module docstring).
        restarts: number of independent initialisations; the fit with the highest mean
            log-likelihood is kept (EM only finds a local optimum, and a start with two
            seeds in one cluster rarely leaves it). The first start is the one a fit
            with ``restarts=1`` and the same generator makes.

    Returns:
        The fitted :class:`GaussianMixture`, float64 on the device of ``latents``.
    """
    if latents.dim() != 2:
        raise ValueError(f"latents must have shape (N, D), got {tuple(latents.shape)}")
    if components < 1:
        raise ValueError(f"components must be at least 1, got {components}")
    if latents.shape[0] < components:
        raise ValueError(f"cannot fit {components} components to {latents.shape[0]} latent vectors")
    if latents.shape[0] < 2:
        raise ValueError("a mixture needs at least 2 latent vectors to fit")
    if init not in _INIT_PARAMS:
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    x = latents.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(x).all():
        raise ValueError("latents contain NaN or infinite values")
    reg = _default_reg(x) if reg_covar is None else float(reg_covar)
    if not reg > 0:
        raise ValueError(f"reg_covar must be positive, got {reg_covar}")

    fits = [
        _fit_once(x, components, iterations, tol, init, reg, _library_seed(generator))
        for _ in range(restarts)
    ]
    # max keeps the first of equally likely fits, so one start is a fit without restarts.
    *best, _ = max(fits, key=lambda fit: fit[3])
    return GaussianMixture(
        *(torch.from_numpy(np.ascontiguousarray(p)).to(latents.device) for p in best)
    )
