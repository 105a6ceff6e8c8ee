"""The range-error model: posterior-mean images, τ² from the checkpoint, the CLI option."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.data import read_image
from jiio_cli.tasks.inverse.range_error import (
    RANGE_ERROR_KEY,
    fit_range_error,
    posterior_image,
    stored_range_error,
)

DIGITS = Path(__file__).resolve().parents[2] / "sample_data" / "digits"
runner = CliRunner(env={"NO_COLOR": "1"})


def test_limits_of_the_posterior_image() -> None:
    decoded = torch.rand(3, 1, 8, 8)
    observed = torch.rand(3, 1, 8, 8)
    known = (torch.rand(3, 1, 8, 8) > 0.3).float()
    hole = ~known.bool()
    # Noise-free observation: observed pixels kept whatever τ², missing ones decoded.
    kept = posterior_image(decoded, observed, known, 0.0, 0.01)
    assert torch.equal(kept[known.bool()], observed[known.bool()])
    assert torch.equal(kept[hole], decoded[hole])
    # τ² = 0 trusts the decoder; τ² = σ² halves the difference.
    assert torch.equal(posterior_image(decoded, observed, known, 0.2, 0.0), decoded)
    half = posterior_image(decoded, observed, known, 0.2, 0.04)
    assert torch.allclose(half[known.bool()], ((decoded + observed) / 2)[known.bool()])
    with pytest.raises(ValueError):
        posterior_image(decoded, observed, known, -0.1, 0.01)
    with pytest.raises(ValueError):
        posterior_image(decoded, observed, known, 0.1, float("nan"))


def test_posterior_share_minimises_the_error_when_the_model_holds() -> None:
    # Fresh draws of u = G + e and y = u + σ ε, away from the [0, 1] clamp.
    tau, sigma = float(torch.empty(()).uniform_(0.05, 0.15)), 0.2
    decoded = torch.full((4000, 1, 4, 4), 0.5)
    clean = decoded + tau * torch.randn_like(decoded)
    observed = clean + sigma * torch.randn_like(clean)
    known = torch.ones(4000, 1, 4, 4)
    posterior = posterior_image(decoded, observed, known, sigma, tau**2)

    def mse(image: torch.Tensor) -> float:
        return float((image - clean).pow(2).mean())

    best = mse(posterior)
    assert best < 0.95 * mse(decoded) and best < 0.5 * mse(observed)
    for share in (0.5, 0.75, 1.25, 1.5):
        other = posterior_image(decoded, observed, known, sigma, share * tau**2)
        assert best <= mse(other) + 1e-5


def test_fit_recovers_the_range_error_of_the_model() -> None:
    tau, sigma = float(torch.empty(()).uniform_(0.05, 0.15)), 0.2
    decoded = torch.rand(2000, 1, 6, 6)
    clean = decoded + tau * torch.randn_like(decoded)
    observed = clean + sigma * torch.randn_like(clean)
    assert fit_range_error(decoded, observed, clean, sigma) == pytest.approx(tau**2, rel=0.1)
    # A decoder that is exact gets τ² = 0: the noisy pixels cannot help.
    assert fit_range_error(clean, observed, clean, sigma) == pytest.approx(0.0, abs=1e-4)
    with pytest.raises(ValueError):
        fit_range_error(decoded, observed, clean, 0.0)


@pytest.mark.parametrize(("text", "value"), [("0.0081", 0.0081), ("-1", None), ("x", None)])
def test_stored_range_error_reads_the_metadata(text: str, value: float | None) -> None:
    assert stored_range_error({RANGE_ERROR_KEY: text}) == value
    assert stored_range_error({}) is None


def test_shipped_decoder_carries_a_range_error() -> None:
    from jiio_cli.tasks.loading import default_checkpoint, load_model

    _, ckpt = load_model(default_checkpoint("decoder"), {"inpaint"}, "decoder", torch.device("cpu"))
    variance = stored_range_error(ckpt.extra)
    assert variance is not None and 1e-4 < variance < 0.05


def _denoise(tmp_path: Path, *extra: str) -> tuple[dict, torch.Tensor]:
    noisy = tmp_path / "noisy.png"
    shutil.copy(DIGITS / "digit_4_noisy.png", noisy)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.png"
    args = ["reconstruct", str(noisy), "--sigma", "0.2", "--out", str(out), "--json"]
    args += ["--iterations", "60", "--allow-unconverged", "--device", "cpu", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), read_image(out, 1)[0]


def test_reconstruct_mixes_in_the_noisy_pixels_by_the_range_error(tmp_path: Path) -> None:
    default, mixed = _denoise(tmp_path)
    off, decoded = _denoise(tmp_path, "--range-error", "0")
    assert off["range_error"] == 0 and default["range_error"] > 0
    noisy = read_image(DIGITS / "digit_4_noisy.png", 1)[0]
    share = default["range_error"] / (default["range_error"] + 0.04)
    expected = (decoded + share * (noisy - decoded)).clamp(0, 1)
    # Same solve both times; the outputs differ by the mixed-in share (8-bit rounding).
    assert torch.allclose(mixed, expected, atol=2 / 255)
    assert not torch.allclose(mixed, decoded, atol=2 / 255)


def test_projection_without_mask_or_noise_is_not_the_input(tmp_path: Path) -> None:
    clean = tmp_path / "digit.png"
    shutil.copy(DIGITS / "digit_4.png", clean)
    args = ["reconstruct", str(clean), "--out", str(tmp_path / "p.png"), "--json"]
    result = runner.invoke(app, [*args, "--iterations", "60", "--allow-unconverged"])
    assert result.exit_code == 0, result.stderr
    projected, original = read_image(tmp_path / "p.png", 1)[0], read_image(clean, 1)[0]
    assert (projected - original).abs().max() > 0.05


def test_negative_range_error_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["reconstruct", str(DIGITS / "digit_4_noisy.png"), "--range-error", "-1"]
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "--range-error" in result.stderr
