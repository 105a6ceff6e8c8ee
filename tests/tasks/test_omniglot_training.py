"""``jiio train --task meta`` on Omniglot-layout data: the Prototypical Network baseline and
the conv4 FiLM DEQ train a few steps and resume exactly; their building blocks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from meta_models import TINY_CONV4
from omniglot_fixtures import layout, write_folder
from training_runs import assert_same_model_tensors, full_and_resumed_runs
from typer.testing import CliRunner

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.cli.app import app
from jiio_cli.models import FiLMClassifier, ProtoNet, ProtoNetConfig
from jiio_cli.models.embedding_cell import EMBEDDING_CONTRACTION, FiLMEmbeddingCell
from jiio_cli.models.protonet import prototype_logits
from jiio_cli.tasks.fewshot.training import MetaTrainConfig, train_meta, training_pools
from jiio_cli.training import TrainConfig

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})

# The tests' conv4 FiLM DEQ, serving the 3 ways of these episodes.
CONV4 = replace(TINY_CONV4, ways=3)


def _data(tmp: Path) -> Path:
    return write_folder(tmp / "omniglot", layout({"Greek": 5, "Korean": 5, "Tagalog": 3}))


def _spec(data: Path, model_type: str, seed: int) -> MetaTrainConfig:
    return MetaTrainConfig(
        model=CONV4,
        loop=TrainConfig(epochs=2, batch_size=2, lr=1e-2, seed=seed),
        ways=(3,),
        queries=1,
        episodes_per_epoch=4,
        inner_iters=4,
        eval_episodes=2,
        data=(str(data),),
        model_type=model_type,
        augment="affine:1",
        episode_kinds=("across", "within"),
    )


def _params(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(path).tensors.items() if k.startswith("model.")}


@pytest.mark.parametrize("model_type", ["protonet", "deq"])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path: Path, model_type: str) -> None:
    spec = _spec(_data(tmp_path), model_type, int(torch.randint(0, 1000, (1,))))
    full, resumed = full_and_resumed_runs(train_meta, spec, tmp_path, stop_after_steps=3)
    assert full.step == 4 and full.epoch == 2 and resumed.step == 4
    last = "meta-last.safetensors"
    assert_same_model_tensors(tmp_path / "full" / last, tmp_path / "cut" / last)
    a = _params(tmp_path / "full" / last)
    # BatchNorm's running statistics are part of the state that resumes.
    assert any("running_mean" in k for k in a)
    # Training moved the encoder's weights.
    torch.manual_seed(spec.loop.seed)
    start = (
        ProtoNet(ProtoNetConfig(8, 1, 16, "crop"))
        if model_type == "protonet"
        else FiLMClassifier(CONV4)
    ).state_dict()
    moved = [k for k, v in start.items() if "weight" in k and not torch.equal(a[f"model.{k}"], v)]
    assert any(k.startswith("encoder.") for k in moved)
    kind = load_checkpoint(tmp_path / "full" / "meta-last.safetensors").model_kind
    assert kind == ("protonet" if model_type == "protonet" else "meta")


def test_training_pools_hold_out_alphabets_and_rotate_training_characters(tmp_path: Path) -> None:
    spec = _spec(_data(tmp_path), "protonet", 0)
    train, val = training_pools(spec)
    assert not {a.split("@")[0] for a in train.alphabets + val.alphabets} & {"Tagalog"}
    base = {n for n in train.names if "@" not in n}
    assert len(base) + val.num_classes == 10
    assert train.num_classes == 4 * len(base)  # each character and its three rotations
    assert not base & set(val.names)  # validation characters are never trained on


def test_cli_trains_the_protonet_baseline(tmp_path: Path) -> None:
    data = _data(tmp_path)
    args = ["train", "--task", "meta", "--dataset", "omniglot", "--data", str(data)]
    args += ["--model", "protonet", "--image-size", "16", "--width", "8", "--ways", "3"]
    args += ["--queries", "1", "--tasks-per-step", "1", "--episodes-per-epoch", "2"]
    args += ["--epochs", "1", "--episode-kinds", "across,within", "--augment", "affine:1"]
    args += ["--preprocess", "crop", "--out", str(tmp_path / "run"), "--json", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "protonet"
    ckpt = load_checkpoint(tmp_path / "run" / "meta-last.safetensors")
    assert ckpt.model_kind == "protonet" and ckpt.model_config["preprocess"] == "crop"


def test_prototype_logits_are_negative_squared_distances_to_class_means() -> None:
    g = torch.Generator().manual_seed(3)
    support = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 0, 0, 1]])
    query = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    logits = prototype_logits(query, support, labels, 3)
    for b in range(2):
        for k in range(3):
            p = support[b][labels[b] == k].mean(0)
            expected = -((query[b] - p) ** 2).sum(-1)
            torch.testing.assert_close(logits[b, :, k], expected)


def test_embedding_cell_is_a_contraction_whatever_its_weights() -> None:
    torch.manual_seed(0)
    cell = FiLMEmbeddingCell(6, 10, 3).double()
    with torch.no_grad():  # weights far beyond the bound, so the rescaling is active
        cell.recurrent.weight.mul_(50)
        cell.output.weight.mul_(50)
    e = torch.randn(1, 1, 6, dtype=torch.float64)
    cell.bind(e)
    v = torch.randn(1, 3, dtype=torch.float64)
    z = torch.randn(1, 1, 6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(
        lambda s: cell(s.view(1, 1, 6), v).flatten(), z.flatten()
    )
    assert torch.linalg.matrix_norm(jac, ord=2) <= EMBEDDING_CONTRACTION + 1e-9
    # At v = 0 the modulation is the identity.
    hidden = (z @ cell.bound_weights()[0].T + cell.drive(e)).tanh()
    torch.testing.assert_close(
        cell(z, torch.zeros(1, 3, dtype=torch.float64)), e + hidden @ cell.bound_weights()[1].T
    )


def test_conv4_embeds_28_pixel_images_in_64_dimensions() -> None:
    model = ProtoNet(ProtoNetConfig())
    assert model.embed(torch.rand(2, 3, 1, 28, 28)).shape == (2, 3, 64)
