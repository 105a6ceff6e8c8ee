"""Score Omniglot few-shot checkpoints on the validation characters of their run (the
training alphabets' held-back 15 %): 20-way 1-shot across alphabets and 5-way 1-shot
within one alphabet (the validation characters have no alphabet of 20), 5 queries per
class, the same episodes for every checkpoint and setting. Used to choose the Omniglot
preprocessing, the transductive weight β of the meta-model's inner problem and the soft
k-means steps of the ProtoNet yardstick — on these characters, never on the held-out
alphabets that the reported figures come from.

Usage: python scripts/omniglot_validation_accuracy.py EPISODES CHECKPOINT [CHECKPOINT ...]
       [--transductive-weights 0,1,3,10] [--soft-kmeans-steps 0,1,3] [--iterations 20]
       [--no-adaptation]

A Prototypical Network is scored at each number of soft k-means steps, a meta-model
(JIIO, ``--iterations`` iterations, its run's other inner settings) at each β and each
number of soft k-means steps of its read-out, and with ``--no-adaptation`` also at v = 0
(no context fit) with each number of steps. Prints one line per checkpoint and setting,
then one JSON object: per kind (mean, 95 % half-width).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.data.episodes import ClassPool, EpisodeBatch, draw_episodes
from jiio_cli.models import MetaConfig
from jiio_cli.tasks.fewshot.classification import centroid_predictions, classify_episodes
from jiio_cli.tasks.fewshot.loading import load_meta_model, load_protonet, spec_from_json
from jiio_cli.tasks.fewshot.protonet import protonet_predictions
from jiio_cli.tasks.fewshot.training import adapt_settings, training_pools
from jiio_cli.training import derived_generator

Predict = Callable[[EpisodeBatch], Tensor]


def _scores(pool: ClassPool, episodes: int, predict: Predict) -> dict[str, tuple[float, float]]:
    scores = {}
    for kind, ways in (("across", 20), ("within", 5)):
        generator = derived_generator(0, 99, ways)
        accuracy: list[float] = []
        for _ in range(episodes // 20):
            ep = draw_episodes(pool, kind, 20, ways, 1, 5, generator)
            accuracy += (predict(ep) == ep.query_labels).float().mean(1).tolist()
        t = torch.tensor(accuracy)
        scores[kind] = (float(t.mean()), float(1.96 * t.std() / len(t) ** 0.5))
    return scores


def _settings_of(path: Path, args: argparse.Namespace) -> dict[str, Predict]:
    """The predictors to score for one checkpoint, by setting name."""
    ckpt = load_checkpoint(path, expected_task={"meta"})
    if ckpt.model_kind == "protonet":
        protonet = load_protonet(path, torch.device("cpu"))
        return {
            f"soft k-means {steps}": (
                lambda ep, steps=steps: protonet_predictions(protonet, ep, steps)
            )
            for steps in args.soft_kmeans_steps
        }
    model, _, spec = load_meta_model(path, torch.device("cpu"))
    model.eval()
    base = adapt_settings(spec, iterations=args.iterations)

    def predict(ep: EpisodeBatch, beta: float | None, steps: int) -> Tensor:
        if beta is None:  # no adaptation
            return centroid_predictions(
                model, ep.support, ep.support_labels, ep.query, ep.ways, base.forward, steps
            )
        settings = replace(base, transductive_weight=beta, soft_kmeans_steps=steps)
        return classify_episodes(model, ep, settings)[0].argmax(-1)

    betas: list[float | None] = [*args.transductive_weights]
    if args.no_adaptation:
        betas.append(None)
    return {
        (f"beta {beta:g}, {args.iterations} iterations" if beta is not None else "v = 0")
        + f", soft k-means {steps}": (lambda ep, beta=beta, steps=steps: predict(ep, beta, steps))
        for beta in betas
        for steps in args.soft_kmeans_steps
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episodes", type=int)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--transductive-weights", default="0")
    parser.add_argument("--soft-kmeans-steps", default="0")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--no-adaptation", action="store_true")
    args = parser.parse_args()
    args.transductive_weights = [float(b) for b in args.transductive_weights.split(",")]
    args.soft_kmeans_steps = [int(s) for s in args.soft_kmeans_steps.split(",")]
    torch.set_num_threads(1)
    out: dict[str, dict] = {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path, expected_task={"meta"})
        cfg = ckpt.model_config
        model_config = MetaConfig(image_size=cfg["image_size"], preprocess=cfg["preprocess"])
        _, val = training_pools(spec_from_json(ckpt.training_config, model_config))
        for name, predict in _settings_of(path, args).items():
            scores = _scores(val, args.episodes, predict)
            key = f"{path} ({name})"
            out[key] = {"preprocess": cfg["preprocess"], "val_classes": val.num_classes, **scores}
            print(key, out[key], flush=True)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
