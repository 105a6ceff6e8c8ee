"""A training run's history, as its checkpoint stores it: step metrics in windows, evaluations.

Usage: python scripts/training_history.py CHECKPOINT [CHECKPOINT ...] [--every 20]
       [--keys loss,query_accuracy,support_objective,residual]

For each checkpoint (``*-last`` or ``*-best`` of ``jiio train``), the per-step entries of
its ``history`` metadata are averaged over windows of ``--every`` steps, one line per
window with the mean of each key; then every evaluation entry (held-out metrics after an
epoch) is printed. Keys a step does not record are left out of its window's mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jiio_cli.checkpoint import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--keys", default="loss,query_accuracy,support_objective,residual")
    args = parser.parse_args()
    keys = args.keys.split(",")
    for checkpoint in args.checkpoints:
        history = json.loads(load_checkpoint(checkpoint).extra.get("history", "[]"))
        steps = [e for e in history if "loss" in e]
        evals = [e for e in history if any(k.startswith(("val", "heldout")) for k in e)]
        print(f"{checkpoint}: {len(steps)} steps")
        for start in range(0, len(steps), args.every):
            window = steps[start : start + args.every]
            parts = []
            for key in keys:
                values = [e[key] for e in window if key in e]
                if values:
                    parts.append(f"{key} {sum(values) / len(values):.4f}")
            print(f"  steps {window[0]['step']:4d}-{window[-1]['step']:4d}: " + ", ".join(parts))
        for entry in evals:
            shown = {k: round(v, 4) for k, v in entry.items() if isinstance(v, int | float)}
            print(f"  evaluation {shown}")


if __name__ == "__main__":
    main()
