"""After each batch, the attack sweep and the episode evaluation hand out their result over
what is finished: the same result a run over just those items gives (what an interrupted
command reports)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from meta_models import save_tiny_meta_model

from jiio_cli.data.episodes import load_glyph_pool
from jiio_cli.engine import SolverConfig
from jiio_cli.models import ClassifierConfig, DEQClassifier
from jiio_cli.tasks.adversarial.attacks import JIIOAttackConfig, PGDConfig, ThreatModel
from jiio_cli.tasks.adversarial.sweep import SweepResult, run_attack_sweep
from jiio_cli.tasks.fewshot.evaluation import evaluate_episodes
from jiio_cli.tasks.fewshot.loading import load_meta_model
from jiio_cli.tasks.fewshot.training import adapt_settings

_JIIO = JIIOAttackConfig(iterations=5, memory=3, tol=1e-3)
_PGD = PGDConfig(steps=2, restarts=2, solve=SolverConfig(memory=3, max_iter=8, tol=1e-3))


def _close(a: Any, b: Any) -> bool:
    """Equal structures whose floats agree to 1e-6 (NaN with NaN): the same numbers
    computed in another order of batches."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def _without_seconds(rows: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.as_dict().items() if k != "seconds"} for row in rows]


def test_the_sweep_after_each_batch_is_the_sweep_of_the_images_so_far() -> None:
    torch.manual_seed(0)
    model = DEQClassifier(ClassifierConfig(num_classes=3, image_size=8, channels=8, groups=4))
    model.eval()
    images, labels = torch.rand(7, 1, 8, 8), torch.randint(0, 3, (7,))
    # PGD's second restart draws random starts: each batch must continue the stream.
    args = ([ThreatModel("linf", 0.2), ThreatModel("l2", 0.5)], ["jiio", "pgd"], _JIIO, _PGD)
    seen: list[SweepResult] = []
    shown: dict[str, int] = {}

    def on_batch(result: SweepResult) -> None:
        # A count is shown only once a result covers it.
        assert all(done <= result.clean_predictions.shape[0] for done in shown.values())
        seen.append(result)

    def progress(label: str, done: int, total: int) -> None:
        assert total == 7 and done <= (seen[-1].clean_predictions.shape[0] if seen else 0)
        shown[label] = done

    whole = run_attack_sweep(
        model,
        images,
        labels,
        *args,
        batch_size=3,
        seed=4,
        keep_examples=4,
        on_batch=on_batch,
        progress=progress,
    )
    assert [r.clean_predictions.shape[0] for r in seen] == [3, 6, 7]
    assert shown == {
        label: 7 for label in ("jiio L∞ 0.2", "pgd L∞ 0.2", "jiio L2 0.5", "pgd L2 0.5")
    }
    for k, partial in zip((3, 6, 7), seen, strict=True):
        alone = run_attack_sweep(
            model, images[:k], labels[:k], *args, batch_size=3, seed=4, keep_examples=4
        )
        assert _close(_without_seconds(partial.rows), _without_seconds(alone.rows))
        assert partial.broken_by == alone.broken_by
        assert partial.eval_unconverged == alone.eval_unconverged
        for key, (adversarial, predicted) in alone.examples.items():
            assert torch.allclose(partial.examples[key][0], adversarial)
            assert torch.equal(partial.examples[key][1], predicted)
    assert _without_seconds(seen[-1].rows) == _without_seconds(whole.rows)


def _scores(report: dict[str, Any]) -> dict[str, Any]:
    """What an evaluation report measured, without its timings."""
    methods = ("jiio", "naive", "centroid")
    kept = {m: {k: v for k, v in report[m].items() if "seconds" not in k} for m in methods}
    return {**kept, "paired": report["paired"], "episodes": report["episodes"]}


def test_the_evaluation_after_each_batch_is_the_evaluation_of_the_episodes_so_far(
    tmp_path: Path,
) -> None:
    save_tiny_meta_model(tmp_path / "meta.safetensors")
    model, _, spec = load_meta_model(tmp_path / "meta.safetensors", torch.device("cpu"))
    settings = adapt_settings(spec, iterations=4)
    pool = load_glyph_pool("test").resized(model.config.image_size)
    common = {"ways": 3, "shots": 1, "queries": 1, "settings": settings, "seed": 2, "batch": 2}
    seen: list[dict[str, Any]] = []
    events: list[tuple[str, int]] = []

    def on_batch(report: dict[str, Any]) -> None:
        seen.append(report)
        events.append(("report", report["episodes"]))

    def progress(label: str, done: int, total: int) -> None:
        assert (label, total) == ("episodes (across)", 5)
        events.append(("progress", done))

    evaluate_episodes(model, pool, episodes=5, on_batch=on_batch, progress=progress, **common)
    # A count is shown only once a report covers it: a signal after a progress line
    # finds that line's episodes in the report.
    assert events == [("progress", 0)] + [
        event for k in (2, 4, 5) for event in (("report", k), ("progress", k))
    ]
    for partial in seen:
        alone = evaluate_episodes(model, pool, episodes=partial["episodes"], **common)
        assert _close(_scores(partial), _scores(alone))
