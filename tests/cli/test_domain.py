"""``jiio reconstruct`` knows its model's domain, keeps known pixels, and is one library call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import reconstruct_on_cpu
from PIL import Image
from typer.testing import CliRunner, Result

from jiio_cli.cli.app import app
from jiio_cli.data import read_image
from jiio_cli.tasks.inverse.reconstruction import hole_psnr, hole_ssim

DIGITS = Path(__file__).resolve().parents[2] / "sample_data" / "digits"
runner = CliRunner(env={"NO_COLOR": "1"})


def _photo_with_hole(tmp_path: Path, colour: bool) -> tuple[Path, Path, Path]:
    """scikit-image's astronaut (colour) or camera (grey), 96×96, with a 24×24 hole."""
    from skimage.data import astronaut, camera

    pixels = astronaut()[::4, ::4][:96, :96] if colour else camera()[::4, ::4][:96, :96]
    clean = tmp_path / "clean.png"
    Image.fromarray(np.ascontiguousarray(pixels)).save(clean)
    mask = np.full((96, 96), 255, np.uint8)
    mask[30:54, 40:64] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    holed = pixels.copy()
    holed[mask == 0] = 0
    Image.fromarray(np.ascontiguousarray(holed)).save(tmp_path / "holed.png")
    return tmp_path / "holed.png", tmp_path / "mask.png", clean


def _reconstruct(*args: str) -> Result:
    return reconstruct_on_cpu(*args, iterations=20)


def test_a_photo_gets_a_warning_in_words_before_the_solve(tmp_path: Path) -> None:
    holed, mask, _ = _photo_with_hole(tmp_path, colour=False)
    result = _reconstruct(str(holed), "--mask", str(mask), "--allow-unconverged")
    assert result.exit_code == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    assert "this decoder was trained on 28×28 greyscale MNIST digits" in warning
    assert "the 96×96 image will be reduced to 28×28" in warning
    assert "it looks like a photo" in warning
    assert "the hole will be filled with strokes like those of MNIST digits" in warning
    # Said before the solve: above the progress line of the solve.
    lines = result.stderr.splitlines()
    assert lines.index(warning) < next(i for i, s in enumerate(lines) if "reconstruct (" in s)


def test_strict_refuses_the_photo_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    holed, mask, _ = _photo_with_hole(tmp_path, colour=True)
    out = tmp_path / "out.png"
    result = _reconstruct(str(holed), "--mask", str(mask), "--strict", "--out", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "--strict" in result.stderr
    assert "in colour but the model knows greyscale only" in result.stderr
    assert not out.exists()


def test_a_digit_gets_no_warning_even_with_strict(tmp_path: Path) -> None:
    result = _reconstruct(
        str(DIGITS / "digit_4_masked.png"),
        "--mask",
        str(DIGITS / "digit_4_mask.png"),
        "--strict",
        "--allow-unconverged",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert result.exit_code == 0, result.stderr
    assert "warning: digit_4" not in result.stderr


def test_a_colour_image_keeps_its_known_pixels_in_colour(tmp_path: Path) -> None:
    holed, mask, clean = _photo_with_hole(tmp_path, colour=True)
    out = tmp_path / "restored.png"
    result = _reconstruct(
        str(holed),
        "--mask",
        str(mask),
        "--reference",
        str(clean),
        "--out",
        str(out),
        "--json",
        "--allow-unconverged",
    )
    assert result.exit_code == 0, result.stderr
    restored, _ = read_image(out)
    original, _ = read_image(holed)
    known, _ = read_image(mask, 1)
    known = (known > 0.5).expand(3, -1, -1)
    assert restored.shape == (3, 96, 96)
    assert torch.equal(restored[known], original[known])  # PNG in, PNG out: exact
    # The hole holds the grey decoder's output: the same value in R, G and B.
    hole = restored[:, ~known[0]]
    assert torch.equal(hole[0], hole[1]) and torch.equal(hole[1], hole[2])
    doc = json.loads(result.stdout)
    row = doc["images"][0]
    assert row["output"] == str(out) and doc["outputs"] == [str(out)]
    # The hole's scores, recomputed by hand from the files.
    ref, _ = read_image(clean)
    in_hole = ~known
    mse = (restored - ref).pow(2)[in_hole].mean()
    assert row["psnr_hole"] == pytest.approx(float(10 * torch.log10(1 / mse)), abs=0.05)
    assert row["psnr_hole"] < row["psnr"]
    assert -1 <= row["ssim_hole"] <= 1 and row["ssim_hole"] < row["ssim"]


def test_hole_scores_against_hand_computed_values() -> None:
    ref = torch.zeros(1, 10, 10)
    img = ref.clone()
    hole = torch.zeros(1, 10, 10, dtype=torch.bool)
    hole[:, 2:4, 2:4] = True
    img[hole] = 0.1  # MSE 0.01 inside the hole: 20 dB; outside the image is exact
    assert hole_psnr(img, ref, hole) == pytest.approx(20.0)
    assert hole_psnr(ref, ref, hole) == float("inf")
    assert hole_ssim(ref + 0.5, ref + 0.5, hole) == pytest.approx(1.0)
    assert hole_ssim(img, ref, hole) < 1.0


def test_the_command_writes_what_the_library_call_returns(tmp_path: Path) -> None:
    """Thin command: reconstruct_images with the command's settings gives the same image."""
    from jiio_cli.tasks.inverse.problems import reconstruction_settings, trained_latent_weight
    from jiio_cli.tasks.inverse.range_error import stored_range_error
    from jiio_cli.tasks.inverse.reconstruction import reconstruct_images
    from jiio_cli.tasks.loading import default_checkpoint, load_decoder

    holed, mask, _ = _photo_with_hole(tmp_path, colour=True)
    out = tmp_path / "cli.png"
    result = _reconstruct(str(holed), "--mask", str(mask), "--out", str(out), "--json",
                          "--allow-unconverged", "--sigma", "0.1")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    decoder, ckpt = load_decoder(default_checkpoint("decoder"), torch.device("cpu"))
    settings = reconstruction_settings(
        20,
        latent_weight=trained_latent_weight(ckpt.training_config),
        tol=1e-2,
        refine_tol=1e-2,
        extra_rounds=2,
    )
    image, _ = read_image(holed)
    known, _ = read_image(mask, 1)
    variance = stored_range_error(ckpt.extra)
    assert variance is not None
    (restored,) = reconstruct_images(
        decoder, [image], [known > 0.5], settings, sigma=0.1, range_error=variance
    )
    written, _ = read_image(out)
    assert torch.allclose(written, restored.image, atol=1 / 255 + 1e-6)
    doc = json.loads(result.stdout)
    assert doc["images"][0]["iterations"] == restored.solve.iterations
    assert doc["images"][0]["converged"] == restored.solve.converged


def test_a_wrong_size_reference_is_refused_before_any_solve(tmp_path: Path, monkeypatch) -> None:
    import jiio_cli.tasks.inverse.reconstruction as reconstruction

    def no_solve(*_args, **_kwargs):
        raise AssertionError("the solve ran before the reference was checked")

    monkeypatch.setattr(reconstruction, "reconstruct_images", no_solve)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "ref.png")
    result = _reconstruct(str(DIGITS / "digit_4_masked.png"), "--reference",
                          str(tmp_path / "ref.png"))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "reference" in result.stderr
    assert "30x30" in result.stderr and "28x28" in result.stderr


def test_the_table_names_each_output_path(tmp_path: Path) -> None:
    out = tmp_path / "restored"
    args = [str(DIGITS / f"digit_{i}_masked.png") for i in (1, 2)]
    args += ["--mask", str(DIGITS / "digit_1_mask.png"), "--mask", str(DIGITS / "digit_2_mask.png")]
    wide = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "400"})
    args += ["--device", "cpu"]
    result = wide.invoke(
        app,
        ["reconstruct", *args, "--out", str(out), "--allow-unconverged", "--iterations", "20"],
    )
    assert result.exit_code == 0, result.stderr
    for i in (1, 2):
        path = out / f"digit_{i}_masked-restored.png"
        assert path.exists()
        assert str(path) in result.stdout  # the table's output column
        assert f"wrote {path}" in result.stderr.splitlines()
