"""Forced divergence: commands report it, exit non-zero, and never write NaN anywhere."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from cli_runs import reconstruct_on_cpu
from typer.testing import CliRunner

from jiio_cli.checkpoint import load_checkpoint, save_checkpoint_like
from jiio_cli.cli.app import app
from jiio_cli.errors import JiioError
from jiio_cli.training import StepOutcome, TrainConfig, TrainRun, run_training

ROOT = Path(__file__).resolve().parents[2]
DIGIT = ROOT / "sample_data" / "digits" / "digit_2.png"
runner = CliRunner(env={"NO_COLOR": "1"})


def _nan_copy(source: Path, target: Path) -> Path:
    """A copy of a checkpoint whose first cell weight is all NaN (the solve must diverge)."""
    ckpt = load_checkpoint(source)
    tensors = dict(ckpt.tensors)
    key = next(k for k in tensors if k.startswith("model.cell") and k.endswith("weight"))
    tensors[key] = torch.full_like(tensors[key], math.nan)
    save_checkpoint_like(target, ckpt, tensors, metrics={}, extra={})
    return target


def _poison_in_place(path: Path) -> None:
    """Set the first cell weight of a checkpoint to NaN, keeping everything else (the
    optimizer state and the training position a resume needs) byte for byte."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    key = next(k for k in tensors if k.startswith("model.cell") and k.endswith("weight"))
    tensors[key] = torch.full_like(tensors[key], math.nan)
    save_file(tensors, str(path), metadata=metadata)


def test_reconstruct_with_a_nan_model_writes_nothing(tmp_path: Path) -> None:
    broken = _nan_copy(ROOT / "models" / "mnist-decoder.safetensors", tmp_path / "nan.safetensors")
    out = tmp_path / "out.png"
    result = reconstruct_on_cpu(
        str(DIGIT), "-c", str(broken), "--out", str(out), "--json", iterations=10
    )
    assert result.exit_code == 1
    assert "diverged: NaN/Inf" in result.stderr and "Traceback" not in result.output
    assert not out.exists()
    doc = result.stdout
    assert '"converged": false' in doc


def test_training_stops_after_consecutive_failures_without_saving(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 1)

    def step_fn(indices: torch.Tensor, step: int, generator: torch.Generator) -> StepOutcome:
        loss = model(torch.randn(len(indices), 3, generator=generator)).sum()
        if step >= 2:  # from the third batch on, the solve "diverges"
            loss = loss * math.nan
        return StepOutcome(loss, {}, ok=step < 2)

    meta = {"task": "generate", "model_kind": "decoder", "model_config": {}, "training_config": {}}
    with pytest.raises(JiioError, match="consecutive batches failed"):
        run_training(
            model=model,
            train_size=40,
            step_fn=step_fn,
            eval_fn=dict,
            config=TrainConfig(epochs=1, batch_size=4, max_bad_steps=3),
            run=TrainRun(tmp_path / "run"),
            name="generate",
            meta=meta,
            best_key="x",
        )
    assert list((tmp_path / "run").iterdir()) == []
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_attack_with_a_nan_classifier_reports_and_writes_nothing(tmp_path: Path) -> None:
    from classifiers import save_classifier

    clean = save_classifier(tmp_path / "clf.safetensors")
    broken = _nan_copy(clean, tmp_path / "nan.safetensors")
    examples = tmp_path / "examples"
    result = runner.invoke(
        app,
        [
            *("attack", "-c", str(broken), "--max-images", "4", "--iterations", "4"),
            *("--save-examples", str(examples), "--device", "cpu", "--json"),
        ],
    )
    assert result.exit_code == 1
    assert "diverged: NaN/Inf on 4 clean image(s)" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert not examples.exists()


def test_sample_and_bench_with_a_nan_decoder_report_and_write_nothing(tmp_path: Path) -> None:
    broken = _nan_copy(ROOT / "models" / "mnist-decoder.safetensors", tmp_path / "nan.safetensors")
    grid = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["sample", "-c", str(broken), "--n", "4", "--out", str(grid), "--device", "cpu"]
    )
    assert result.exit_code == 1 and "diverged: NaN/Inf for 4 of 4" in result.stderr
    assert not grid.exists() and "Traceback" not in result.output
    plot = tmp_path / "plot.png"
    result = runner.invoke(
        app,
        [
            *("bench", "--task", "reconstruct", "-c", str(broken), "--batch-size", "2"),
            *("--naive-steps", "2", "--plot", str(plot), "--device", "cpu", "--json"),
        ],
    )
    assert result.exit_code == 1 and "diverged (NaN/Inf)" in result.stderr
    assert result.stdout == "" and not plot.exists()


def test_adapt_with_a_nan_meta_model_reports(tmp_path: Path) -> None:
    broken = _nan_copy(ROOT / "models" / "meta-glyphs.safetensors", tmp_path / "nan.safetensors")
    result = runner.invoke(
        app, ["adapt", "-c", str(broken), "--episodes", "2", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 1 and "diverged: NaN/Inf" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


def test_attack_and_adapt_benches_with_nan_models_report_and_write_nothing(
    tmp_path: Path,
) -> None:
    from classifiers import save_classifier

    classifier = _nan_copy(save_classifier(tmp_path / "clf.safetensors"), tmp_path / "c.st")
    plot = tmp_path / "attack.png"
    result = runner.invoke(
        app,
        [
            *("bench", "--task", "attack", "-c", str(classifier), "--batch-size", "3"),
            *("--plot", str(plot), "--device", "cpu", "--json"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "diverged: NaN/Inf on 3 clean image(s)" in result.stderr
    assert result.stdout == "" and not plot.exists() and "Traceback" not in result.output

    meta = _nan_copy(ROOT / "models" / "meta-glyphs.safetensors", tmp_path / "m.st")
    result = runner.invoke(
        app,
        [
            *("bench", "--task", "adapt", "-c", str(meta), "--batch-size", "2"),
            *("--naive-steps", "2", "--device", "cpu", "--json"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "diverged: NaN/Inf on 2 of 2 tasks" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output


def test_train_command_stops_on_a_diverged_resume_without_writing(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, images=(rng.random((32, 12, 12)) * 255).astype(np.uint8))
    out = tmp_path / "run"
    args = [
        *("train", "--task", "denoise", "--sigma", "0.1", "--data", str(data)),
        *("--image-size", "12", "--width", "8", "--latent-dim", "4", "--batch-size", "8"),
        *("--inner-iters", "4", "--out", str(out), "--device", "cpu", "--seed", "1"),
    ]
    first = runner.invoke(app, [*args, "--epochs", "1"])
    assert first.exit_code == 0, first.output
    last = out / "denoise-last.safetensors"
    _poison_in_place(last)  # every solve of the resumed run now diverges
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = runner.invoke(app, [*args, "--epochs", "3", "--resume", "--max-bad-steps", "2"])
    assert result.exit_code == 1, result.output
    assert "2 consecutive batches failed" in result.stderr
    assert "Traceback" not in result.output
    # Nothing was written: the run folder holds the same files, byte for byte.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
