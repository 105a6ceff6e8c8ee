"""Image metrics, the Fréchet distance and the classical baselines against references."""

from __future__ import annotations

import math
import secrets

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from jiio_cli.frechet import frechet_distance
from jiio_cli.metrics import psnr, ssim


def _fresh_generator() -> torch.Generator:
    # A new seed per run: the references must agree on any random input, not one draw.
    # Failing assertions print gen.initial_seed() so a failure can be replayed.
    return torch.Generator().manual_seed(secrets.randbits(63))


def _smooth_images(batch: int, channels: int, size: int) -> torch.Tensor:
    """Smooth (B, C, size, size) images in [0.1, 0.9]: sums of low-frequency sinusoids."""
    coords = torch.linspace(0, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty(batch, channels, size, size, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            phase = 0.7 * b + 1.3 * c
            field = torch.sin(2 * math.pi * xx + phase) * torch.cos(math.pi * yy - phase)
            images[b, c] = 0.5 + 0.4 * field
    return images


# ---------------------------------------------------------------- PSNR


def test_psnr_known_mse(device: torch.device) -> None:
    x = torch.zeros(2, 3, 4, 5, device=device)
    y = torch.full_like(x, 0.1)  # MSE 0.01
    y[1] = 0.5  # MSE 0.25
    expected = torch.tensor([20.0, 10 * math.log10(4.0)])
    torch.testing.assert_close(psnr(x, y).cpu(), expected, rtol=0, atol=1e-5)
    # A range of 2 multiplies range² / MSE by 4.
    torch.testing.assert_close(
        psnr(x, y, data_range=2.0).cpu(), expected + 10 * math.log10(4.0), rtol=0, atol=1e-5
    )


def test_psnr_identical_images_is_inf() -> None:
    x = torch.rand(3, 1, 8, 8, generator=_fresh_generator())
    y = x.clone()
    y[1, 0, 0, 0] += 0.5
    scores = psnr(x, y)
    assert scores.shape == (3,)
    assert math.isinf(scores[0]) and scores[0] > 0
    assert math.isinf(scores[2])
    assert math.isfinite(scores[1])


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8))
    with pytest.raises(ValueError, match="at least 7"):
        ssim(torch.zeros(1, 1, 6, 8), torch.zeros(1, 1, 6, 8))


# ---------------------------------------------------------------- SSIM


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_of_flat_images_is_the_luminance_term(device: torch.device, data_range: float) -> None:
    # Flat images have no local variance, so the contrast-structure factor is C2 / C2 = 1
    # and SSIM is (2ab + C1) / (a² + b² + C1) at every pixel, C1 = (0.01 · range)²; the
    # score averages it over channels.
    a = data_range * torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.0, 0.4]], dtype=torch.float64)
    b = data_range * torch.tensor([[0.3, 0.5, 0.1], [0.7, 0.6, 0.05]], dtype=torch.float64)
    x = a[:, :, None, None].expand(2, 3, 9, 11).to(device)
    y = b[:, :, None, None].expand(2, 3, 9, 11).to(device)
    c1 = (0.01 * data_range) ** 2
    expected = ((2 * a * b + c1) / (a * a + b * b + c1)).mean(dim=1)
    got = ssim(x, y, data_range=data_range)
    assert got.device == x.device and got.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_reads_batches_as_images_with_channels_first(channels: int) -> None:
    # The (B, C, H, W) layout against scikit-image called on each (H, W, C) image.
    gen = _fresh_generator()
    x = torch.rand(4, channels, 23, 17, generator=gen, dtype=torch.float64)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    scale = torch.tensor([0.02, 0.1, 0.3, 1.0], dtype=torch.float64).view(4, 1, 1, 1)
    y = (x + scale * noise).clamp(0, 1)
    ours = ssim(x, y)
    for b in range(4):
        ref = structural_similarity(
            x[b].permute(1, 2, 0).numpy(),
            y[b].permute(1, 2, 0).numpy(),
            data_range=1.0,
            channel_axis=-1,
        )
        assert abs(float(ours[b]) - float(ref)) < 1e-12, f"seed {gen.initial_seed()}"
    # Noisier pairs score lower: the batch order is kept.
    assert bool((ours[:-1] > ours[1:]).all()), f"seed {gen.initial_seed()}"


def test_ssim_keeps_the_input_dtype() -> None:
    gen = _fresh_generator()
    x = torch.rand(1, 1, 16, 16, generator=gen)
    y = torch.rand(1, 1, 16, 16, generator=gen)
    score = ssim(x, y)
    assert score.dtype == torch.float32
    assert abs(float(score[0]) - float(ssim(x.double(), y.double())[0])) < 1e-6
    integers = (255 * x).to(torch.uint8), (255 * y).to(torch.uint8)
    assert ssim(*integers, data_range=255.0).dtype == torch.float32


def test_ssim_identical_is_one(device: torch.device) -> None:
    x = torch.rand(2, 3, 12, 12, generator=_fresh_generator()).to(device)
    torch.testing.assert_close(ssim(x, x).cpu(), torch.ones(2), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_matches_scipy_sqrtm() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    gen = _fresh_generator()
    mixing = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    a = torch.randn(200, 6, generator=gen, dtype=torch.float64) @ mixing
    b = torch.randn(150, 6, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
    seed = f"seed {gen.initial_seed()}"
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6), seed
    # float32 input is promoted, so the answer barely moves.
    assert frechet_distance(a.float(), b.float()) == pytest.approx(expected, rel=1e-4), seed


def test_frechet_zero_for_identical_sets() -> None:
    feats = torch.randn(100, 8, generator=_fresh_generator())
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(feats, feats.flip(0)) == pytest.approx(0.0, abs=1e-6)


def test_frechet_closed_form_diagonal_gaussians() -> None:
    # Samples are whitened exactly, so the sample statistics equal the chosen ones and the
    # distance reduces to ‖μ_a − μ_b‖² + Σ_i (σ_a,i − σ_b,i)².
    gen = _fresh_generator()

    def exact(mean: torch.Tensor, std: torch.Tensor, n: int) -> torch.Tensor:
        z = torch.randn(n, mean.numel(), generator=gen, dtype=torch.float64)
        z = z - z.mean(0)
        chol = torch.linalg.cholesky(torch.cov(z.T))
        white = torch.linalg.solve_triangular(chol, z.T, upper=False).T
        return white * std + mean

    mean_a = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    mean_b = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    std_a = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    std_b = torch.tensor([3.0, 2.0, 1.5], dtype=torch.float64)
    expected = float((mean_a - mean_b).pow(2).sum() + (std_a - std_b).pow(2).sum())
    got = frechet_distance(exact(mean_a, std_a, 300), exact(mean_b, std_b, 500))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((4, 2), float("nan")), torch.zeros(5, 2))


# ---------------------------------------------------------------- classical baselines


def test_biharmonic_inpainting_fills_hole() -> None:
    pytest.importorskip("skimage")
    from jiio_cli.baselines import inpaint_biharmonic_batch

    clean = _smooth_images(2, 3, 24).float()
    known = torch.ones(2, 1, 24, 24, dtype=torch.bool)
    known[0, :, 8:16, 8:16] = False
    known[1, :, 3:10, 12:20] = False
    holed = clean * known
    filled = inpaint_biharmonic_batch(holed, known)
    assert filled.shape == clean.shape and filled.dtype == clean.dtype
    mse_black = (holed - clean).pow(2).mean()
    mse_filled = (filled - clean).pow(2).mean()
    assert mse_filled < 0.01 * mse_black
    # Observed pixels are kept.
    torch.testing.assert_close(filled * known, clean * known, rtol=0, atol=1e-6)


def test_biharmonic_rejects_bad_mask() -> None:
    pytest.importorskip("skimage")
    from jiio_cli.baselines import inpaint_biharmonic_batch

    with pytest.raises(ValueError, match="bool"):
        inpaint_biharmonic_batch(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        inpaint_biharmonic_batch(torch.zeros(1, 1, 8, 8), torch.ones(1, 3, 8, 8, dtype=torch.bool))


def test_tv_denoising_raises_psnr() -> None:
    pytest.importorskip("skimage")
    from jiio_cli.baselines import denoise_tv_batch

    clean = _smooth_images(2, 1, 32)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=_fresh_generator(), dtype=clean.dtype)
    noisy = noisy.clamp(0, 1)
    denoised = denoise_tv_batch(noisy, weight=0.1)
    assert denoised.shape == clean.shape
    assert bool((psnr(denoised, clean) > psnr(noisy, clean) + 3.0).all())


def test_tune_tv_weight_picks_from_grid() -> None:
    pytest.importorskip("skimage")
    from jiio_cli.baselines import DEFAULT_TV_WEIGHTS, denoise_tv_batch, tune_tv_weight

    clean = _smooth_images(2, 3, 24)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=_fresh_generator(), dtype=clean.dtype)
    grid = (0.001, 0.05, 0.1, 5.0)
    chosen = tune_tv_weight(noisy, clean, grid)
    assert chosen in grid
    scores = {w: float(psnr(denoise_tv_batch(noisy, w), clean).mean()) for w in grid}
    assert scores[chosen] == max(scores.values())
    assert tune_tv_weight(noisy, clean) in DEFAULT_TV_WEIGHTS
    with pytest.raises(ValueError, match="at least one"):
        tune_tv_weight(noisy, clean, ())


def test_missing_skimage_is_a_jiio_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from jiio_cli.baselines import denoise_tv_batch
    from jiio_cli.errors import JiioError

    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.restoration", None)
    with pytest.raises(JiioError, match="pip install scikit-image"):
        denoise_tv_batch(torch.zeros(1, 1, 8, 8), weight=0.1)
