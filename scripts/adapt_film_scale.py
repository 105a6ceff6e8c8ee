"""JIIO's time to the naive loop's support objective for several context preconditioners.

Usage: python scripts/adapt_film_scale.py [--seeds 0,1,2] [--scales 1,0.5,0.4,0.3]

For each seed, the batch of ``jiio bench --task adapt --seed S`` (32 held-out 5-way
1-shot glyph tasks, ``models/meta-glyphs.safetensors``, the default meta-model when
BENCHMARKS.md's figures were measured, with the bench's α_x of then, 1): the naive loop
(50 Adam steps, each a full forward and adjoint solve) runs once and sets the target,
its final mean support objective; then, for each factor d of ``--scales``, JIIO with the
bench's settings and ``--film-scale d`` searches the smallest budget that reaches it, as
the bench does (doubling, then bisection). Prints one JSON line per (seed, d): the naive
seconds, the JIIO budget and seconds at the target, and their ratio. The naive run is
shared by the factors of a seed, so their JIIO figures are comparable with each other
exactly in iterations and up to this machine's timing noise in seconds.

Threads are PyTorch's default; set OMP_NUM_THREADS to fix them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import torch

from jiio_cli.bench.adapt import AdaptBenchConfig, jiio_bench_settings, naive_bench_settings
from jiio_cli.bench.budget_search import first_reaching_run, search_budgets
from jiio_cli.bench.timing import timed_median
from jiio_cli.data.episodes import draw_episodes, load_glyph_pool
from jiio_cli.tasks.fewshot.classification import adapt_context
from jiio_cli.tasks.fewshot.loading import load_meta_model
from jiio_cli.tasks.fewshot.training import adapt_settings
from jiio_cli.tasks.loading import MODELS_DIR
from jiio_cli.training import derived_generator


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scales", default="1,0.5,0.4,0.3")
    args = parser.parse_args()
    device = torch.device("cpu")
    model, _, spec = load_meta_model(MODELS_DIR / "meta-glyphs.safetensors", device)
    pool = load_glyph_pool("test").resized(model.config.image_size)
    settings = adapt_settings(spec)
    # The bench's settings of its measurements (α_x was 1 then; the bench now uses 2).
    base = AdaptBenchConfig(alpha_x=1.0)
    for seed in [int(v) for v in args.seeds.split(",")]:
        ep = draw_episodes(pool, "across", 32, 5, 1, 5, derived_generator(seed, 13)).to(device)

        def adapt(s: Any, method: str, ep: Any = ep) -> tuple[Any, float]:
            return timed_median(
                lambda: adapt_context(model, ep.support, ep.support_labels, ep.ways, s, method),
                device,
                1,
            )

        adapt(jiio_bench_settings(model, settings, base, 3), "jiio")  # warm-up
        naive, naive_seconds = adapt(naive_bench_settings(settings, base), "naive")
        target = float(naive.objective.mean())
        for scale in floats(args.scales):
            cfg = dataclasses.replace(base, film_scale=scale)

            def run(budget: int, cfg: AdaptBenchConfig = cfg) -> dict[str, Any]:
                result, seconds = adapt(jiio_bench_settings(model, settings, cfg, budget), "jiio")
                return {
                    "iterations": budget,
                    "seconds": seconds,
                    "objective": float(result.objective.mean()),
                }

            def reached(r: dict[str, Any], target: float = target) -> bool:
                return r["objective"] <= target

            runs = search_budgets(run, reached, base.jiio_budgets, base.refine)
            first = first_reaching_run(runs, reached)
            line = {
                "seed": seed,
                "film_scale": scale,
                "naive_seconds": naive_seconds,
                "target": target,
                "jiio_iterations": first["iterations"] if first else None,
                "jiio_seconds": first["seconds"] if first else None,
                "ratio": naive_seconds / first["seconds"] if first else None,
                "runs": [(r["iterations"], round(r["objective"], 4)) for r in runs],
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
