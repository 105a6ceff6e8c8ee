"""``jiio adapt`` on real-drawing folders and Omniglot episodes with the conv4 FiLM DEQ."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from meta_models import TINY_CONV4, save_tiny_conv4_model, save_tiny_protonet
from omniglot_fixtures import drawing, layout, write_folder
from PIL import Image
from typer.testing import CliRunner

from jiio_cli.cli.app import app
from jiio_cli.models import MetaConfig
from jiio_cli.tasks.loading import MODELS_DIR

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


def _write_task(root: Path, transform) -> None:
    """Support: 4 characters, drawer 1; queries: drawers 2-3, in class folders."""
    for k in range(4):
        for drawer, part in ((1, "support"), (2, "query"), (3, "query")):
            folder = root / part / f"char{k}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(transform(drawing(5, k, drawer))).save(folder / f"{drawer}.png")


def _adapt(model: Path, root: Path) -> dict:
    args = ["adapt", "-c", str(model), "--support", str(root / "support")]
    args += ["--query", str(root / "query"), "--json", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_folders_in_either_polarity_give_the_same_predictions(tmp_path: Path) -> None:
    model = tmp_path / "conv4.safetensors"
    save_tiny_conv4_model(model)
    _write_task(tmp_path / "plain", lambda p: p)
    _write_task(tmp_path / "inverted", lambda p: 255 - p)  # white strokes on black
    plain = _adapt(model, tmp_path / "plain")
    inverted = _adapt(model, tmp_path / "inverted")
    assert [r["predicted"] for r in inverted["predictions"]] == [
        r["predicted"] for r in plain["predictions"]
    ]
    for a, b in zip(plain["predictions"], inverted["predictions"], strict=True):
        assert abs(a["probability"] - b["probability"]) < 1e-4


def test_the_shipped_model_gives_the_same_predictions_at_any_size_and_polarity(
    tmp_path: Path,
) -> None:
    model = MODELS_DIR / "meta-omniglot.safetensors"
    _write_task(tmp_path / "plain", lambda p: p)

    def inverted_big(p: np.ndarray) -> np.ndarray:  # white on black, three times as large
        return np.kron(255 - p, np.ones((3, 3), np.uint8))

    def on_page(p: np.ndarray) -> np.ndarray:  # off-centre on a larger, wider page
        page = np.full((64, 80), 255, np.uint8)
        page[20:55, 30:65] = p
        return page

    _write_task(tmp_path / "inverted_big", inverted_big)
    _write_task(tmp_path / "paged", on_page)
    plain = _adapt(model, tmp_path / "plain")
    predicted = [r["predicted"] for r in plain["predictions"]]
    assert len(set(predicted)) == 4  # the premise: the classes are told apart
    for variant in ("inverted_big", "paged"):
        other = _adapt(model, tmp_path / variant)
        assert [r["predicted"] for r in other["predictions"]] == predicted


def test_episodes_report_both_kinds_with_the_protonet_side_by_side(tmp_path: Path) -> None:
    model = tmp_path / "conv4.safetensors"
    save_tiny_conv4_model(model)
    save_tiny_protonet(tmp_path / "protonet.safetensors")
    data = write_folder(tmp_path / "d", layout({"Early_Aramaic": 5, "Tagalog": 4, "Greek": 6}))
    args = ["adapt", "-c", str(model), "--episodes", "4", "--ways", "4", "--queries", "2"]
    args += ["--data", str(data), "--baseline", str(tmp_path / "protonet.safetensors")]
    args += ["--iterations", "4", "--batch-size", "2", "--json", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)["reports"]
    assert [r["episode_kind"] for r in reports] == ["across", "within"]
    for report in reports:
        assert "held-out" in report["data"]
        assert {"jiio", "naive", "centroid", "protonet"} <= report.keys()
        assert set(report["paired"]) == {
            "jiio_minus_naive",
            "jiio_minus_centroid",
            "jiio_minus_protonet",
        }
        assert report["residuals"]["query_z"]["max"] < 1e-3  # the DEQ converged


def _within_episodes_against_a_protonet(
    tmp_path: Path, config: MetaConfig, episodes: str
) -> tuple[Path, list[str]]:
    """A tiny conv4 model of ``config`` and a ProtoNet saved in ``tmp_path``, and the
    ``jiio adapt`` arguments that score both on within-alphabet episodes of a small
    Omniglot-layout folder."""
    model = tmp_path / "conv4.safetensors"
    save_tiny_conv4_model(model, config)
    save_tiny_protonet(tmp_path / "protonet.safetensors")
    data = write_folder(tmp_path / "d", layout({"Early_Aramaic": 5, "Tagalog": 4, "Greek": 6}))
    args = ["adapt", "-c", str(model), "--episodes", episodes, "--ways", "4", "--queries", "2"]
    args += ["--data", str(data), "--baseline", str(tmp_path / "protonet.safetensors")]
    args += ["--episode-kind", "within", "--iterations", "4", "--batch-size", "2"]
    return model, [*args, "--device", "cpu"]


def test_a_transductive_model_is_held_against_the_soft_kmeans_protonet_too(
    tmp_path: Path,
) -> None:
    model, args = _within_episodes_against_a_protonet(
        tmp_path, dataclasses.replace(TINY_CONV4, transductive_weight=2.0), "4"
    )
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"protonet", "protonet_soft_kmeans"} <= report.keys()
    assert "jiio_minus_protonet_soft_kmeans" in report["paired"]
    # The single-task path sees its query folder too.
    _write_task(tmp_path / "task", lambda p: p)
    single = _adapt(model, tmp_path / "task")
    assert len(single["predictions"]) == 8


def test_a_soft_kmeans_read_out_sets_the_yardstick_steps_and_can_be_overridden(
    tmp_path: Path,
) -> None:
    """A model whose read-out refines on the queries is held against the ProtoNet refined
    by the same number of steps; ``--soft-kmeans-steps`` overrides the model's, and 0
    drops the refined yardstick."""
    model, args = _within_episodes_against_a_protonet(
        tmp_path, dataclasses.replace(TINY_CONV4, soft_kmeans_steps=4), "2"
    )
    report = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert report["soft_kmeans_steps"] == 4 and report["protonet_soft_kmeans_steps"] == 4
    assert report["transductive_weight"] == 0.0
    result = runner.invoke(app, [*args, "--soft-kmeans-steps", "7"])
    assert result.exit_code == 0, result.output
    assert "then 7 soft k-means steps" in result.output
    assert "Prototypical Network, 7 soft k-means steps" in result.output
    report = json.loads(runner.invoke(app, [*args, "--json", "--soft-kmeans-steps", "0"]).stdout)
    assert report["soft_kmeans_steps"] == 0 and "protonet_soft_kmeans" not in report
    _write_task(tmp_path / "task", lambda p: p)
    single = _adapt(model, tmp_path / "task")
    assert single["soft_kmeans_steps"] == 4


def test_bench_adapt_takes_the_data_and_the_transductive_weight(tmp_path: Path) -> None:
    model = tmp_path / "conv4.safetensors"
    save_tiny_conv4_model(model)
    data = write_folder(tmp_path / "d", layout({"Early_Aramaic": 5, "Tagalog": 4, "Greek": 6}))
    args = ["bench", "--task", "adapt", "-c", str(model), "--data", str(data), "--ways", "4"]
    args += ["--batch-size", "2", "--naive-steps", "2", "--transductive-weight", "2"]
    result = runner.invoke(app, [*args, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["transductive_weight"] == 2.0
    assert "held-out" in report["episodes"]
