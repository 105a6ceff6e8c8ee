"""Does a meta-model's DEQ reach its fixed points? Forward-solve residuals at v = 0.

Usage: python scripts/meta_fixed_point_residuals.py CHECKPOINT [CHECKPOINT ...]
       [--episodes 16] [--budgets 40,200]

For each checkpoint, 5-way 1-shot episodes of the held-out alphabets (5 queries per
class) are drawn with the seed of ``jiio adapt --seed 0``; the query images of each
task, and its support rows (with their pseudo-queries for a model trained with them),
are solved as one row each at the zero context by Anderson (memory 5, tolerance 1e-5)
with each budget, and the 10 / 50 / 90 % quantiles over the tasks of the relative
residual ‖f(z) − z‖ / ‖f(z)‖ of the returned iterate are printed. A DEQ whose
residual stays far above the tolerance has no fixed point that the solver reaches: its
outputs are those of a truncated iteration.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from jiio_cli.data.episodes import load_glyph_pool, sample_episodes
from jiio_cli.engine import SolverConfig, forward_solve
from jiio_cli.tasks.fewshot.classification import support_rows
from jiio_cli.tasks.fewshot.loading import load_meta_model
from jiio_cli.training import derived_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--budgets", default="40,200")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    levels = torch.tensor([0.1, 0.5, 0.9])
    for checkpoint in args.checkpoints:
        model, _, _ = load_meta_model(checkpoint, torch.device("cpu"))
        pool = load_glyph_pool("test").resized(model.config.image_size)
        ep = sample_episodes(pool, args.episodes, 5, 1, 5, derived_generator(0, 11, 5, 1))
        rows = {
            "queries": ep.query,
            "support rows": support_rows(model, ep.support, ep.support_labels)[0],
        }
        zero = torch.zeros(args.episodes, model.context_size)
        for name, images in rows.items():
            with torch.no_grad():
                model.bind(images)
                try:
                    cell = model.context_cell()
                    for budget in budgets:
                        solver = SolverConfig(memory=5, max_iter=budget, tol=1e-5)
                        stats = forward_solve(cell, zero, model.init_state(args.episodes), solver)
                        q = stats.stats.residual[:, 0].quantile(levels).tolist()
                        print(
                            f"{checkpoint.name}  {name:12s} {budget:4d} iterations: "
                            f"residual {q[0]:.2e} / {q[1]:.2e} / {q[2]:.2e}"
                        )
                finally:
                    model.unbind()


if __name__ == "__main__":
    main()
