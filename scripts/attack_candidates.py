"""Which iterate of the JIIO attack is strongest? Per-iterate and best-of-subset robust accuracy.

Runs the `jiio attack` default JIIO attack once, records x every ``--every`` iterations,
and scores each recorded iterate (and the per-sample best over subsets of them) by the
same fresh forward solve that `jiio attack` reports with. Prints JSON lines.

Usage: python scripts/attack_candidates.py --norm linf --eps 0.3 [--images 500] [--every 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from jiio_cli.engine import jiio_solve
from jiio_cli.tasks.adversarial.attacks import COMMAND_ATTACK, ThreatModel, attack_problem, classify
from jiio_cli.tasks.adversarial.data import load_attack_set
from jiio_cli.tasks.loading import default_checkpoint, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cpu")
    path = default_checkpoint("classifier")
    model, _ = load_model(path, {"adversarial"}, "classifier", device)
    images, labels, _ = load_attack_set(model.config, None, args.images)
    clean_ok = classify(model, images).predictions == labels
    attack = dataclasses.replace(COMMAND_ATTACK, candidates=1)
    at = tuple(range(args.every, attack.iterations, args.every))
    engine = dataclasses.replace(attack.engine_config(args.eps), checkpoints=at)
    threat = ThreatModel(args.norm, args.eps)  # type: ignore[arg-type]
    problem = attack_problem(model, images, labels, threat, images, attack.loss)
    with torch.no_grad():
        result = jiio_solve(problem, engine)
    iterates = {k: x for k, (_, x) in result.checkpoints.items()}
    iterates[attack.iterations] = result.x
    survives = {k: classify(model, x).predictions == labels for k, x in iterates.items()}

    def robust(keys: list[int]) -> float:
        together = torch.stack([survives[k] for k in keys]).all(dim=0)
        return round(float((clean_ok & together).float().mean()), 4)

    for k in sorted(iterates):
        print(json.dumps({"iterate": k, "robust_accuracy": robust([k])}))
    t = attack.iterations
    for keys in ([t // 2, t], [t // 4, t // 2, 3 * t // 4, t], sorted(iterates)):
        if all(k in iterates for k in keys):
            print(json.dumps({"best_of": keys, "robust_accuracy": robust(keys)}))


if __name__ == "__main__":
    main()
