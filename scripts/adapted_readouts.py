"""Which part of the meta-model's adaptation helps: read-out rules at the adapted context.

Usage: python scripts/adapted_readouts.py [--split val|test] [--ways 5] [--iterations 160]
       [--episodes 200] [--checkpoint PATH]

On 1-shot episodes (``val``: the meta-train characters held out for validation;
``test``: the held-out alphabets) the context v* is fitted by JIIO with the model's own
settings, then each query is classified five ways, and each rule's accuracy is printed
with its paired difference to the no-adaptation baseline (nearest class centroid of the
DEQ features at v = 0, ``cent0``):

- ``head``: the adapted head's logits (what ``jiio adapt`` reports for a model with the
  ``head`` read-out; for a ``centroids`` model it is the inner objective's classifier);
- ``cent0``: nearest centroid at v = 0;
- ``centv``: nearest centroid of the features at v* (does adapting the FiLM context make
  the features themselves more discriminative? what ``jiio adapt`` reports for a model
  with the ``centroids`` read-out);
- ``ens``, ``ens0``: the head's log-probabilities plus those of ``centv`` / ``cent0``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from jiio_cli.data.episodes import load_glyph_pool, sample_episodes
from jiio_cli.models.meta import class_means
from jiio_cli.tasks.fewshot.classification import adapt_context, query_states
from jiio_cli.tasks.fewshot.loading import load_meta_model
from jiio_cli.tasks.fewshot.tally import mean_and_ci95, paired_difference
from jiio_cli.tasks.fewshot.training import adapt_settings, split_pool
from jiio_cli.training import derived_generator


def _centroid_logits(fq: Tensor, fs: Tensor, labels: Tensor, ways: int) -> Tensor:
    """−‖f_q − c_k‖² for queries (B, m, C) and class centroids of the support (B, n, C)."""
    return -torch.cdist(fq, class_means(fs, labels, ways)).pow(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=160)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cpu")
    model, _, spec = load_meta_model(args.checkpoint, device)
    size = model.config.image_size
    if args.split == "val":
        pool = split_pool(load_glyph_pool("train").resized(size))[1]
    else:
        pool = load_glyph_pool("test").resized(size)
    settings = adapt_settings(spec, iterations=args.iterations)
    queries = 5 if args.ways == 5 else 2
    generator = derived_generator(0, 11, args.ways, 1)
    rules = ("head", "cent0", "centv", "ens", "ens0")
    scores: dict[str, list[float]] = {rule: [] for rule in rules}
    for begin in range(0, args.episodes, 20):
        count = min(20, args.episodes - begin)
        ep = sample_episodes(pool, count, args.ways, 1, queries, generator)
        v = adapt_context(model, ep.support, ep.support_labels, args.ways, settings, "jiio").x

        def features(images: Tensor, context: Tensor) -> Tensor:
            return model.features(query_states(model, images, context, settings.forward))

        with torch.no_grad():
            zq = query_states(model, ep.query, v, settings.forward)
            head = model.logits(zq, v, args.ways).log_softmax(-1)
            at_v = _centroid_logits(
                model.features(zq), features(ep.support, v), ep.support_labels, args.ways
            )
            zero = torch.zeros_like(v)
            at_zero = _centroid_logits(
                features(ep.query, zero), features(ep.support, zero), ep.support_labels, args.ways
            )
        logits = {
            "head": head,
            "cent0": at_zero,
            "centv": at_v,
            "ens": head + at_v.log_softmax(-1),
            "ens0": head + at_zero.log_softmax(-1),
        }
        for rule, value in logits.items():
            correct = value.argmax(-1) == ep.query_labels
            scores[rule] += correct.float().mean(dim=1).tolist()
    for rule in rules:
        mean, ci = mean_and_ci95(scores[rule])
        diff = paired_difference(scores[rule], scores["cent0"])
        print(
            f"{rule:6s} {100 * mean:6.2f} ± {100 * ci:.2f} %   "
            f"minus cent0: {100 * diff['mean']:+.2f} ± {100 * diff['ci95']:.2f} points"
        )


if __name__ == "__main__":
    main()
