"""Gaussian mixture fitting, density, sampling and checkpoint round trip."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import torch

from jiio_cli.density import GaussianMixture, fit_gmm

TRUE_MEANS = torch.tensor([[0.0, 0.0, 0.0], [8.0, 0.0, 2.0], [0.0, -8.0, 5.0]], dtype=torch.float64)
TRUE_WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def _fresh_generator() -> torch.Generator:
    # A new seed per run; failing assertions print it so a failure can be replayed.
    return torch.Generator().manual_seed(secrets.randbits(63))


def _three_clusters(gen: torch.Generator, n: int = 1200) -> torch.Tensor:
    """(n, 3) draws from a well-separated 3-component mixture with anisotropic spreads."""
    labels = torch.multinomial(TRUE_WEIGHTS, n, replacement=True, generator=gen)
    scales = torch.tensor([[1.0, 0.5, 0.8], [0.6, 1.2, 0.7], [0.9, 0.9, 0.4]], dtype=torch.float64)
    noise = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return (TRUE_MEANS[labels] + noise * scales[labels]).float()


def _match(fitted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Index of the fitted mean nearest each true mean (components come in any order)."""
    return torch.cdist(truth, fitted).argmin(dim=1)


def _random_mixture(gen: torch.Generator, k: int = 3, d: int = 4) -> GaussianMixture:
    weights = torch.rand(k, generator=gen, dtype=torch.float64) + 0.2
    means = 3 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    factors = torch.randn(k, d, d, generator=gen, dtype=torch.float64)
    covariances = factors @ factors.transpose(1, 2) + 0.5 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(weights / weights.sum(), means, covariances)


def test_em_recovers_well_separated_means() -> None:
    gen = _fresh_generator()
    seed = f"seed {gen.initial_seed()}"
    latents = _three_clusters(gen)
    # Three starts: one k-means++ start lands two seeds in one cluster about once in 1000.
    mixture = fit_gmm(latents, components=3, generator=gen, restarts=3)
    assert mixture.means.shape == (3, 3) and mixture.covariances.shape == (3, 3, 3)
    assert mixture.weights.dtype == torch.float64
    order = _match(mixture.means, TRUE_MEANS)
    assert sorted(order.tolist()) == [0, 1, 2], seed
    assert torch.allclose(mixture.means[order], TRUE_MEANS, atol=0.25), seed
    assert torch.allclose(mixture.weights[order], TRUE_WEIGHTS, atol=0.06), seed
    assert float(mixture.weights.sum()) == pytest.approx(1.0)


def test_log_prob_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    gen = _fresh_generator()
    mixture = _random_mixture(gen)
    points = 4 * torch.randn(50, 4, generator=gen, dtype=torch.float64)
    # Independent reference: log Σ_k w_k N(x; μ_k, Σ_k) from SciPy's per-component densities.
    per_component = np.stack(
        [
            np.log(float(w)) + stats.multivariate_normal(m.numpy(), c.numpy()).logpdf(points)
            for w, m, c in zip(mixture.weights, mixture.means, mixture.covariances, strict=True)
        ],
        axis=1,
    )
    reference = torch.from_numpy(np.logaddexp.reduce(per_component, axis=1))
    torch.testing.assert_close(mixture.log_prob(points), reference)
    # float32 points give float32 densities of the same value.
    got = mixture.log_prob(points.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference.float())


def test_log_prob_is_finite_far_from_data() -> None:
    mixture = _random_mixture(_fresh_generator())
    far = torch.full((2, 4), 1e4, dtype=torch.float64)
    assert bool(torch.isfinite(mixture.log_prob(far)).all())


def test_samples_have_mixture_moments() -> None:
    gen = _fresh_generator()
    seed = f"seed {gen.initial_seed()}"
    mixture = _random_mixture(gen, k=3, d=2)
    samples = mixture.sample(40_000, generator=gen)
    assert samples.shape == (40_000, 2) and samples.dtype == torch.float64
    w, mu, cov = mixture.weights, mixture.means, mixture.covariances
    mean = w @ mu
    # Law of total covariance: E[Σ_k] + Cov[μ_k].
    centred = mu - mean
    total_cov = (w[:, None, None] * (cov + centred[:, :, None] * centred[:, None, :])).sum(0)
    scale = total_cov.diagonal().sqrt().max()
    assert torch.allclose(samples.mean(0), mean, atol=0.05 * float(scale)), seed
    assert torch.allclose(torch.cov(samples.T), total_cov, atol=0.1 * float(scale) ** 2), seed
    assert mixture.sample(0).shape == (0, 2)
    assert mixture.sample(3, dtype=torch.float32).dtype == torch.float32


def test_tensors_round_trip() -> None:
    mixture = _random_mixture(_fresh_generator())
    tensors = mixture.to_tensors("prior.")
    assert set(tensors) == {"prior.weights", "prior.means", "prior.covariances"}
    restored = GaussianMixture.from_tensors({**tensors, "other": torch.zeros(1)}, "prior.")
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(restored, name), getattr(mixture, name))
    # Also through a real safetensors payload.
    safetensors_torch = pytest.importorskip("safetensors.torch")
    loaded = safetensors_torch.load(safetensors_torch.save(tensors))
    again = GaussianMixture.from_tensors(loaded, "prior.")
    assert torch.equal(again.covariances, mixture.covariances)


def test_from_tensors_reports_missing_and_inconsistent_keys() -> None:
    tensors = _random_mixture(_fresh_generator(), k=3, d=4).to_tensors("gmm.")
    incomplete = {k: v for k, v in tensors.items() if k != "gmm.means"}
    with pytest.raises(ValueError, match=r"missing: gmm\.means"):
        GaussianMixture.from_tensors(incomplete, "gmm.")
    with pytest.raises(ValueError, match="missing"):
        GaussianMixture.from_tensors(tensors, "other.")
    bad_shape = {**tensors, "gmm.means": torch.zeros(2, 4)}
    with pytest.raises(ValueError, match="inconsistent"):
        GaussianMixture.from_tensors(bad_shape, "gmm.")
    bad_weights = {**tensors, "gmm.weights": torch.tensor([0.5, 0.5, 0.5])}
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture.from_tensors(bad_weights, "gmm.")
    not_pd = {**tensors, "gmm.covariances": -torch.eye(4).expand(3, 4, 4).clone()}
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture.from_tensors(not_pd, "gmm.")


def test_fit_is_deterministic_given_generator() -> None:
    seed = secrets.randbits(63)
    latents = _three_clusters(torch.Generator().manual_seed(seed), n=400)
    fits = [
        fit_gmm(latents, components=5, generator=torch.Generator().manual_seed(seed))
        for _ in range(2)
    ]
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(fits[0], name), getattr(fits[1], name)), f"seed {seed}"


def test_restarts_keep_the_most_likely_fit() -> None:
    seed = secrets.randbits(63)
    latents = _three_clusters(torch.Generator().manual_seed(seed), n=300)
    # Both runs share their first start, so the best of five can only be as good or better.
    single = fit_gmm(latents, components=4, generator=torch.Generator().manual_seed(seed))
    several = fit_gmm(
        latents, components=4, generator=torch.Generator().manual_seed(seed), restarts=5
    )
    assert float(several.log_prob(latents).mean()) >= float(single.log_prob(latents).mean())


def test_fit_on_device_matches_cpu(device: torch.device) -> None:
    latents = _three_clusters(torch.Generator().manual_seed(0), n=300)
    cpu = fit_gmm(latents, components=3, generator=torch.Generator().manual_seed(1))
    other = fit_gmm(latents.to(device), components=3, generator=torch.Generator().manual_seed(1))
    assert other.means.device.type == device.type
    torch.testing.assert_close(other.means.cpu(), cpu.means, rtol=1e-6, atol=1e-6)


def test_ridge_keeps_covariances_positive_definite() -> None:
    # Every component sits on points that span a line only, so only the ridge makes Σ_k PD.
    t = torch.linspace(-1, 1, 60, dtype=torch.float64)[:, None]
    line = torch.cat([t * torch.tensor([1.0, 2.0]), t * torch.tensor([1.0, 2.0]) + 10])
    mixture = fit_gmm(line, components=2, generator=torch.Generator().manual_seed(0))
    assert bool((torch.linalg.eigvalsh(mixture.covariances) > 0).all())
    assert bool(torch.isfinite(mixture.log_prob(line)).all())
    # An explicit absolute ridge is used as given.
    fixed = fit_gmm(line, components=2, generator=torch.Generator().manual_seed(0), reg_covar=0.5)
    assert float(torch.linalg.eigvalsh(fixed.covariances).min()) == pytest.approx(0.5, rel=1e-6)


def test_fitted_parameters_are_a_likelihood_maximum() -> None:
    # EM converges to a stationary point of the likelihood: moving a mean, scaling a
    # covariance or shifting weight between components all lower the mean log-likelihood.
    # This checks the parameters as handed over (weights, means, covariances, not e.g.
    # precisions), not only their shapes.
    gen = _fresh_generator()
    seed = f"seed {gen.initial_seed()}"
    latents = _three_clusters(gen, n=600).double()
    fit = fit_gmm(latents, components=3, generator=gen, restarts=3, tol=1e-10, iterations=500)
    best = float(fit.log_prob(latents).mean())
    eye = torch.eye(3, dtype=torch.float64)
    for k in range(3):
        for step in (-0.1, 0.1):
            means = fit.means.clone()
            means[k] += step
            spread = fit.covariances.clone()
            spread[k] *= 1 + step
            weights = fit.weights.clone()
            weights[k] += step * weights[k]
            weights[(k + 1) % 3] -= step * fit.weights[k]
            for moved in (
                GaussianMixture(fit.weights, means, fit.covariances),
                GaussianMixture(fit.weights, fit.means, spread),
                GaussianMixture(weights, fit.means, fit.covariances),
                GaussianMixture(fit.weights, fit.means, fit.covariances + abs(step) * eye),
            ):
                assert float(moved.log_prob(latents).mean()) < best, seed


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="cannot fit 5 components"):
        fit_gmm(torch.zeros(3, 2), components=5)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_gmm(torch.zeros(10))
    with pytest.raises(ValueError, match="init"):
        fit_gmm(torch.randn(10, 2), components=2, init="kmeans")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        fit_gmm(torch.full((10, 2), float("nan")), components=2)
    with pytest.raises(ValueError, match="restarts"):
        fit_gmm(torch.randn(10, 2), components=2, restarts=0)
    with pytest.raises(ValueError, match="iterations"):
        fit_gmm(torch.randn(10, 2), components=2, iterations=0)
    with pytest.raises(ValueError, match="at least 2"):
        fit_gmm(torch.randn(1, 2), components=1)
