"""Other inner objectives for the meta-model's context at test time, against no adaptation.

Usage: python scripts/context_objectives.py transductive BETA,LAMBDA [BETA,LAMBDA ...]
           [--iterations 40] [--episodes 100] [--ways 5] [--queries 5]
       python scripts/context_objectives.py augmented HEAD,LAMBDA [HEAD,LAMBDA ...]
           [--copies 4] [--warp 1.0] [--iterations 60] [--episodes 100]
       python scripts/context_objectives.py pseudo HEAD,LAMBDA [HEAD,LAMBDA ...]
           [--copies 4] [--warp 1.0] [--iterations 60] [--episodes 100]

Both fit the context v of ``models/meta-glyphs.safetensors`` (the default meta-model
when BENCHMARKS.md's figures were measured) by JIIO (its own solver settings, with the
budget given) on 1-shot episodes (``--ways`` classes, ``--queries`` queries per class) of
the meta-train characters held out for validation, and classify the queries by the
centroid read-out at v*. Each setting's accuracy is printed with its paired differences
(points) to the no-adaptation baselines (centroids at v = 0; for ``augmented`` also the
centroids of the copies at v = 0):

- ``transductive``: the head's support cross-entropy + β · the mean entropy of the
  queries' centroid read-out + λ · mean(v²); support and queries are solved as one row.
  A transductive baseline that adapts nothing is printed too: the centroids at v = 0
  refined by one soft k-means step with the queries' features; and each setting's
  queries are also classified by that same refined rule at v*, so that adapting and
  not adapting meet under one transductive read-out.
- ``augmented``: each support image gets ``--copies`` elastically warped copies (the
  training augmentation's warp of ``--warp`` pixels); v minimises the centroid
  read-out's cross-entropy of every copy (plus HEAD times the head's) + λ · mean(v²),
  and the read-out uses the centroids of all copies. A second baseline, the centroids of
  the same copies at v = 0, is printed too.
- ``pseudo``: the warped copies serve as pseudo-queries only: v minimises their
  cross-entropy under the centroid read-out of the clean support images (plus HEAD
  times the head's support cross-entropy) + λ · mean(v²), and the queries are read out
  against the clean support's centroids, as the baseline's are.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.data.augment import Augmentation, augment
from jiio_cli.data.episodes import load_glyph_pool, sample_episodes
from jiio_cli.engine import InputProblem, jiio_solve
from jiio_cli.models import FiLMClassifier
from jiio_cli.tasks.fewshot.classification import query_states
from jiio_cli.tasks.fewshot.loading import load_meta_model
from jiio_cli.tasks.fewshot.tally import mean_and_ci95, paired_difference
from jiio_cli.tasks.fewshot.training import adapt_settings, split_pool
from jiio_cli.tasks.loading import MODELS_DIR
from jiio_cli.training import derived_generator


def accuracy(logits: Tensor, labels: Tensor) -> list[float]:
    return (logits.argmax(-1) == labels).float().mean(dim=1).tolist()


def per_task_ce(logits: Tensor, labels: Tensor) -> Tensor:
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return ce.view(labels.shape).mean(dim=1)


def soft_kmeans_logits(
    model: FiLMClassifier, query_z: Tensor, support_z: Tensor, labels: Tensor, ways: int
) -> Tensor:
    """Centroid logits after one soft k-means step with the unlabelled queries.

    c_k ← (Σ_{s ∈ k} φ(s) + Σ_q p_qk φ(q)) / (n_k + Σ_q p_qk), p the centroid read-out's
    probabilities: a transductive rule that does not adapt the model.
    """
    p = model.centroid_logits(query_z, support_z, labels, ways).softmax(-1)  # (B, m, N)
    query, support = model.features(query_z), model.features(support_z)
    one_hot = F.one_hot(labels, ways).to(p.dtype)  # (B, n, N)
    sums = one_hot.transpose(1, 2) @ support + p.transpose(1, 2) @ query
    counts = one_hot.sum(1) + p.sum(1)
    centroids = sums / counts[:, :, None]
    distances = (
        query.pow(2).sum(-1, keepdim=True)
        - 2 * query @ centroids.transpose(1, 2)
        + centroids.pow(2).sum(-1)[:, None, :]
    )
    return -model.log_distance_scale.exp() * distances


def context_objective(
    model: FiLMClassifier,
    labels: Tensor,
    ways: int,
    n_fit: int,
    transductive: bool,
    weight: float,
    lam: float,
    n_clean: int | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """ℓ(z, v) per task for a row whose first ``n_fit`` states are the labelled images.

    With ``n_clean`` (the ``pseudo`` objective) the first ``n_clean`` of them are the
    clean support images and the rest their warped copies, classified against them.
    """

    def objective(z: Tensor, v: Tensor) -> Tensor:
        fit = z[:, :n_fit]
        if n_clean is not None:
            clean, copies = fit[:, :n_clean], fit[:, n_clean:]
            loss = per_task_ce(
                model.centroid_logits(copies, clean, labels[:, :n_clean], ways),
                labels[:, n_clean:],
            )
            if weight > 0:
                head = model.logits(clean, v, ways)
                loss = loss + weight * per_task_ce(head, labels[:, :n_clean])
        elif transductive:
            loss = per_task_ce(model.logits(fit, v, ways), labels)
            log_p = model.centroid_logits(z[:, n_fit:], fit, labels, ways).log_softmax(-1)
            loss = loss + weight * -(log_p.exp() * log_p).sum(-1).mean(dim=1)
        else:
            loss = per_task_ce(model.centroid_logits(fit, fit, labels, ways), labels)
            if weight > 0:
                loss = loss + weight * per_task_ce(model.logits(fit, v, ways), labels)
        return loss + lam * v.pow(2).mean(dim=1)

    return objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("objective", choices=("transductive", "augmented", "pseudo"))
    parser.add_argument("settings", nargs="+", help="pairs WEIGHT,LAMBDA")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--warp", type=float, default=1.0)
    args = parser.parse_args()
    pairs = [tuple(float(t) for t in text.split(",")) for text in args.settings]
    transductive = args.objective == "transductive"
    pseudo = args.objective == "pseudo"
    iterations = args.iterations or (40 if transductive else 60)
    ways = args.ways
    model, _, spec = load_meta_model(MODELS_DIR / "meta-glyphs.safetensors", torch.device("cpu"))
    pool = split_pool(load_glyph_pool("train").resized(model.config.image_size))[1]
    settings = adapt_settings(spec, iterations=iterations)
    episodes_gen = derived_generator(0, 11, ways, 1)
    warp_gen = torch.Generator().manual_seed(123)
    warp = Augmentation("elastic", args.warp)
    scores: dict[str, list[float]] = {"centroids at v = 0": []}
    if transductive:
        scores["soft k-means centroids at v = 0"] = []
    elif not pseudo:
        scores["centroids of the copies at v = 0"] = []
    for pair in pairs:
        scores[f"{args.objective} {pair[0]:g},{pair[1]:g}"] = []
        if transductive:
            scores[f"{args.objective} {pair[0]:g},{pair[1]:g}, soft k-means"] = []
    for begin in range(0, args.episodes, 20):
        count = min(20, args.episodes - begin)
        ep = sample_episodes(pool, count, ways, 1, args.queries, episodes_gen)
        n = ep.support.shape[1]
        support, labels = ep.support, ep.support_labels
        if not transductive:
            flat = ep.support.flatten(0, 1)
            copies = [augment(flat, warp, warp_gen).view_as(ep.support) for _ in range(args.copies)]
            support = torch.cat([ep.support, *copies], dim=1)
            labels = labels.repeat(1, args.copies + 1)
        n_fit = support.shape[1]
        rows = torch.cat([support, ep.query], dim=1)
        with torch.no_grad():
            zero = rows.new_zeros(count, model.context_size)
            z0 = query_states(model, rows, zero, settings.forward)
            query0 = z0[:, n_fit:]
            base = model.centroid_logits(query0, z0[:, :n], ep.support_labels, ways)
            scores["centroids at v = 0"] += accuracy(base, ep.query_labels)
            if transductive:
                refined = soft_kmeans_logits(model, query0, z0[:, :n], ep.support_labels, ways)
                scores["soft k-means centroids at v = 0"] += accuracy(refined, ep.query_labels)
            if not transductive and not pseudo:
                copies0 = model.centroid_logits(query0, z0[:, :n_fit], labels, ways)
                scores["centroids of the copies at v = 0"] += accuracy(copies0, ep.query_labels)
        for weight, lam in pairs:
            objective = context_objective(
                model, labels, ways, n_fit, transductive, weight, lam, n if pseudo else None
            )
            solved = rows if transductive else support
            with torch.no_grad():
                model.bind(solved)
                try:
                    problem = InputProblem(
                        model.context_cell(),
                        objective,
                        z0=model.init_state(count),
                        x0=zero.clone(),
                    )
                    context = jiio_solve(problem, settings.jiio).x
                finally:
                    model.unbind()
                z = query_states(model, rows, context, settings.forward)
                if pseudo:  # the clean support's centroids, as for the baseline
                    logits = model.centroid_logits(z[:, n_fit:], z[:, :n], ep.support_labels, ways)
                else:
                    logits = model.centroid_logits(z[:, n_fit:], z[:, :n_fit], labels, ways)
            scores[f"{args.objective} {weight:g},{lam:g}"] += accuracy(logits, ep.query_labels)
            if transductive:
                refined = soft_kmeans_logits(model, z[:, n_fit:], z[:, :n_fit], labels, ways)
                name = f"{args.objective} {weight:g},{lam:g}, soft k-means"
                scores[name] += accuracy(refined, ep.query_labels)
    baselines = [name for name in scores if "centroids" in name and "v = 0" in name]
    for name, values in scores.items():
        mean, ci = mean_and_ci95(values)
        line = f"{name:36s} {100 * mean:6.2f} ± {100 * ci:.2f} %"
        for base in baselines:
            diff = paired_difference(values, scores[base])
            line += f"   minus {base}: {100 * diff['mean']:+.2f} ± {100 * diff['ci95']:.2f}"
        print(line)


if __name__ == "__main__":
    main()
