"""``jiio train --task meta``: checkpoints, exact resume, and the loaded model's settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from training_runs import assert_same_model_tensors, full_and_resumed_runs
from typer.testing import CliRunner

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.cli.app import app
from jiio_cli.models import FiLMClassifier, MetaConfig
from jiio_cli.tasks.fewshot.loading import load_meta_model
from jiio_cli.tasks.fewshot.training import MetaTrainConfig, split_pool, train_meta, training_pools
from jiio_cli.training import TrainConfig, TrainRun

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


def _spec(seed: int) -> MetaTrainConfig:
    return MetaTrainConfig(
        model=MetaConfig(context_dim=4, ways=5, channels=8, image_size=8, head_context=True),
        loop=TrainConfig(epochs=2, batch_size=2, lr=1e-3, seed=seed),
        ways=(3, 5),
        queries=1,
        episodes_per_epoch=4,
        inner_iters=4,
        eval_episodes=2,
    )


def _params(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(path).tensors.items() if k.startswith("model.")}


def test_resumed_run_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    spec = _spec(int(torch.randint(0, 1000, (1,))))
    full, resumed = full_and_resumed_runs(train_meta, spec, tmp_path, stop_after_steps=3)
    assert full.step == 4 and full.epoch == 2 and resumed.step == 4
    last = "meta-last.safetensors"
    assert_same_model_tensors(tmp_path / "full" / last, tmp_path / "cut" / last)
    a = _params(tmp_path / "full" / last)
    # Training moved the parameters away from their initialisation.
    torch.manual_seed(spec.loop.seed)
    start = FiLMClassifier(spec.model).state_dict()
    assert all(not torch.equal(a[f"model.{k}"], v) for k, v in start.items() if "film" in k)
    # Each step cycled through the ways.
    ways = [h["ways"] for h in full.history if "ways" in h]
    assert ways == [3.0, 5.0, 3.0, 5.0]
    evals = [h for h in full.history if "val_accuracy" in h]
    assert len(evals) == 2 and {"val_accuracy_3way", "val_accuracy_5way"} <= evals[0].keys()


def test_loaded_model_carries_its_training_settings(tmp_path: Path) -> None:
    spec = _spec(0)
    train_meta(spec, torch.device("cpu"), TrainRun(tmp_path / "run", stop_after_steps=1))
    model, _, loaded = load_meta_model(
        tmp_path / "run" / "meta-last.safetensors", torch.device("cpu")
    )
    assert model.config == spec.model
    assert (
        loaded.inner_iters == 4 and loaded.ways == (3, 5) and loaded.hyper_step == spec.hyper_step
    )


def test_validation_classes_are_held_out_of_training() -> None:
    spec = _spec(0)
    train, val = training_pools(spec)
    assert not set(train.names) & set(val.names)
    assert 0.1 < val.num_classes / (train.num_classes + val.num_classes) < 0.2
    # The split depends on the pool only, not on the run's seed.
    assert split_pool(train)[0].names == split_pool(train)[0].names


def test_cli_trains_and_reports_validation_accuracy(tmp_path: Path) -> None:
    args = ["train", "--task", "meta", "--ways", "3", "--queries", "1", "--epochs", "1",
            "--episodes-per-epoch", "2", "--tasks-per-step", "2", "--image-size", "8",
            "--width", "8", "--context-dim", "4", "--inner-iters", "3",
            "--out", str(tmp_path / "run"), "--device", "cpu", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["steps"] == 1 and 0 <= doc["val_accuracy_3way"] <= 1
    assert (tmp_path / "run" / "meta-best.safetensors").exists()
    again = runner.invoke(app, args)  # never silently overwrites a run
    assert again.exit_code == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("dataset", ["omniglot"])
def test_unavailable_datasets_are_usage_errors(dataset: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--task", "meta", "--dataset", dataset, "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("flag", "expected"), [("--head-context", True), ("--no-head-context", False)]
)
def test_cli_head_context_flag_reaches_the_model(tmp_path: Path, flag: str, expected: bool) -> None:
    args = ["train", "--task", "meta", "--ways", "3", "--queries", "1", "--epochs", "1",
            "--episodes-per-epoch", "2", "--tasks-per-step", "2", "--image-size", "8",
            "--width", "8", "--context-dim", "4", "--inner-iters", "3", "--readout",
            "centroids", flag, "--out", str(tmp_path / "run"), "--device", "cpu",
            "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model, _, _ = load_meta_model(tmp_path / "run" / "meta-last.safetensors", torch.device("cpu"))
    assert model.config.head_context is expected
    # Without the read-out offset the context is the FiLM code alone.
    assert model.context_size == 4 + (3 * 8 if expected else 0)


@pytest.mark.parametrize(
    ("text", "warp", "affine"),
    [("affine:1", 0.0, 1.0), ("affine:0.5+elastic:1.5", 1.5, 0.5), (None, 1.0, 0.0)],
)
@pytest.mark.parametrize("copies", [None, 3])
def test_cli_pseudo_query_options_reach_the_model(
    tmp_path: Path, text: str | None, warp: float, affine: float, copies: int | None
) -> None:
    args = ["train", "--task", "meta", "--ways", "3", "--queries", "1", "--epochs", "1",
            "--episodes-per-epoch", "2", "--tasks-per-step", "2", "--image-size", "8",
            "--width", "8", "--context-dim", "4", "--inner-iters", "3", "--readout",
            "centroids", "--support-loss", "pseudo-queries", "--out", str(tmp_path / "run"),
            "--device", "cpu", "--json"]  # fmt: skip
    args += ["--pseudo-augment", text] if text else []
    args += ["--pseudo-copies", str(copies)] if copies else []
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model, _, _ = load_meta_model(tmp_path / "run" / "meta-last.safetensors", torch.device("cpu"))
    assert (model.config.pseudo_warp, model.config.pseudo_affine) == (warp, affine)
    assert model.config.pseudo_copies == (copies or 2)


def test_init_starts_a_new_run_from_another_runs_weights(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    source = replace(
        _spec(int(torch.randint(0, 1000, (1,)))),
        model=MetaConfig(context_dim=4, ways=5, channels=8, image_size=8, readout="centroids"),
    )
    train_meta(source, cpu, TrainRun(tmp_path / "source", stop_after_steps=2))
    source_ckpt = tmp_path / "source" / "meta-last.safetensors"
    # Other options, the same parameters: the context's parts and the support loss
    # change, the weights carry over. Adam's first step moves each weight by about lr,
    # so with a tiny lr the new run's weights after one step are the source's.
    tuned = MetaTrainConfig(
        model=MetaConfig(
            context_dim=4,
            ways=5,
            channels=8,
            image_size=8,
            head_context=False,
            readout="centroids",
            support_loss="pseudo-queries",
            metric_context=True,
        ),
        loop=TrainConfig(
            epochs=1, batch_size=2, lr=1e-9, seed=source.loop.seed + 1, init=str(source_ckpt)
        ),
        ways=(3,),
        queries=1,
        episodes_per_epoch=4,
        inner_iters=4,
        eval_episodes=2,
    )
    state = train_meta(tuned, cpu, TrainRun(tmp_path / "tuned", stop_after_steps=1))
    assert state.step == 1  # a new run: its own step count
    a = _params(source_ckpt)
    b = _params(tmp_path / "tuned" / "meta-last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    torch.manual_seed(tuned.loop.seed)
    fresh = FiLMClassifier(tuned.model).state_dict()
    assert any(not torch.allclose(a[f"model.{k}"], v, atol=1e-3) for k, v in fresh.items())
    saved = load_checkpoint(tmp_path / "tuned" / "meta-last.safetensors").training_config
    assert saved["loop"]["init"] == str(source_ckpt)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("models/mnist-decoder.safetensors", "holds a 'decoder' model"),
        ("models/meta-glyphs.safetensors", "different model configuration"),
        ("missing.safetensors", "missing.safetensors"),
    ],
)
def test_init_that_does_not_fit_is_one_line(tmp_path: Path, source: str, message: str) -> None:
    args = ["train", "--task", "meta", "--ways", "3", "--queries", "1", "--epochs", "1",
            "--episodes-per-epoch", "2", "--tasks-per-step", "2", "--image-size", "8",
            "--width", "8", "--context-dim", "4", "--inner-iters", "3",
            "--init", str(Path(__file__).resolve().parents[2] / source),
            "--out", str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not any((tmp_path / "run").glob("*.safetensors"))
