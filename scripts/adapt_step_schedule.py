"""A start phase for the context step of few-shot adaptation, on the adapt bench's tasks.

Usage: python scripts/adapt_step_schedule.py SCHEDULE [--seed 0]

SCHEDULE is ``A`` (a constant α_x; the bench's default was 1 on this model) or
``A0:A:K`` (α_x = A0 for the first K iterations, then A, with Anderson's history
cleared at the switch), as in ``scripts/latent_step_schedule.py`` for reconstruction.
The rest is ``jiio bench --task adapt --batch-size 32 --naive-steps 50 --ways 5 --device
cpu -c models/meta-glyphs.safetensors`` (the default meta-model when BENCHMARKS.md's
figures were measured): the naive loop's support objective is the target, and JIIO's
budget search prints each budget's seconds, support objective and query accuracy, and
the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from latent_step_schedule import parse_schedule  # the same A or A0:A:K syntax

from jiio_cli.bench.adapt import AdaptBenchConfig, time_to_equal_support_objective
from jiio_cli.data.episodes import load_glyph_pool, sample_episodes
from jiio_cli.tasks.fewshot.loading import load_meta_model
from jiio_cli.tasks.fewshot.training import adapt_settings
from jiio_cli.tasks.loading import MODELS_DIR
from jiio_cli.training import derived_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("schedule")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device("cpu")
    model, _, spec = load_meta_model(MODELS_DIR / "meta-glyphs.safetensors", device)
    pool = load_glyph_pool("test").resized(model.config.image_size)
    # The bench's tasks: 32 five-way 1-shot episodes with 5 queries per class.
    episodes = sample_episodes(pool, 32, 5, 1, 5, derived_generator(args.seed, 13)).to(device)
    cfg = dataclasses.replace(
        AdaptBenchConfig(naive_steps=50), alpha_x=parse_schedule(args.schedule)
    )
    speed = time_to_equal_support_objective(model, episodes, adapt_settings(spec), cfg)
    naive = speed["naive"]
    print(f"{args.schedule}: naive {naive['seconds']:.2f} s to {naive['support_objective']:.4f}")
    for run in speed["jiio"]["runs"]:
        print(
            f"  {run['iterations']:4d} iterations  {run['seconds']:6.2f} s  "
            f"support objective {run['support_objective']:.4f}  "
            f"query accuracy {run['query_accuracy']:.4f}"
        )
    ratio = speed["ratio"]
    print("ratio " + ("not reached" if ratio is None else f"{ratio:.2f}x"))


if __name__ == "__main__":
    main()
