"""Soft k-means refinement of class centroids on unlabelled queries, and the meta-model's
transductive read-out built on it, against direct computations in float64."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from meta_models import TINY_CONV4

from jiio_cli.engine import SolverConfig
from jiio_cli.models import FiLMClassifier, MetaConfig
from jiio_cli.models.soft_kmeans import soft_kmeans_refine
from jiio_cli.tasks.fewshot.classification import (
    AdaptConfig,
    centroid_predictions,
    query_logits,
    task_soft_kmeans_steps,
)
from jiio_cli.tasks.fewshot.protonet import soft_kmeans_prototypes


def _seed() -> int:
    return int(torch.randint(0, 2**31 - 1, (1,)))


def _direct(centroids, counts, query, scale, steps):
    """The update written out per task and class, with explicit loops."""
    out = centroids.clone()
    for b in range(centroids.shape[0]):
        c = centroids[b].clone()
        for _ in range(steps):
            d = torch.stack([((query[b] - c[k]) ** 2).sum(-1) for k in range(c.shape[0])], -1)
            w = torch.softmax(-scale * d, dim=-1)  # (m, N)
            c = torch.stack(
                [
                    (counts[b, k] * centroids[b, k] + (w[:, k : k + 1] * query[b]).sum(0))
                    / (counts[b, k] + w[:, k].sum())
                    for k in range(c.shape[0])
                ]
            )
        out[b] = c
    return out


@pytest.mark.parametrize("steps", [0, 1, 4])
def test_refinement_is_the_update_written_out(steps: int) -> None:
    g = torch.Generator().manual_seed(_seed())
    centroids = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    counts = torch.randint(1, 4, (2, 3, 1), generator=g).double()
    query = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    ours = soft_kmeans_refine(centroids, counts, query, 0.8, steps)
    torch.testing.assert_close(ours, _direct(centroids, counts, query, 0.8, steps))


def test_queries_move_a_centroid_and_fix_a_prediction() -> None:
    """One dimension: supports at 0 (class 0) and 3 (class 1); class 1's queries sit near
    2 and class 0's near 0. The query at 1.4 is nearer 0 than 3, but nearer class 1's
    refined centroid than class 0's."""
    support = torch.tensor([[[0.0], [3.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1]])
    query = torch.tensor([[[-0.1], [0.0], [0.1], [1.8], [1.9], [2.0], [2.1], [1.4]]]).double()
    before = soft_kmeans_prototypes(support, labels, query, 2, 0)
    after = soft_kmeans_prototypes(support, labels, query, 2, 10)
    assert torch.cdist(query, before).argmin(-1)[0, -1] == 0
    assert torch.cdist(query, after).argmin(-1)[0, -1] == 1
    assert 2.0 < after[0, 1, 0] < 2.6 and abs(after[0, 0, 0]) < 0.3


def _model(steps: int, metric: bool = False) -> FiLMClassifier:
    torch.manual_seed(_seed())
    config = dataclasses.replace(TINY_CONV4, soft_kmeans_steps=steps, metric_context=metric)
    model = FiLMClassifier(config).double().eval()
    with torch.no_grad():
        model.log_distance_scale.fill_(-0.4)
    return model


@pytest.mark.parametrize("metric", [False, True])
def test_the_read_out_refines_on_its_queries(metric: bool) -> None:
    """``readout_logits`` with K steps: −s‖q − c_k‖² at the centroids refined K steps on
    these queries (offsets and metric weights applied first), scale s the read-out's."""
    g = torch.Generator().manual_seed(_seed())
    model = _model(3, metric)
    ways, n, m, e = 3, 4, 6, model.feature_dim
    z = torch.randn(2, n + m, e, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2, 0], [2, 1, 0, 1]])
    v = torch.randn(2, model.context_size + ways * e, generator=g, dtype=torch.float64) * 0.3
    logits = model.readout_logits(z, v, ways, labels)
    root = model.metric_root_weights(v)
    weigh = (lambda t: t * root[:, None, :]) if root is not None else (lambda t: t)
    means = torch.stack(
        [torch.stack([z[b, :n][labels[b] == k].mean(0) for k in range(ways)]) for b in range(2)]
    )
    start = weigh(means + model.centroid_offsets(v, ways))
    counts = torch.nn.functional.one_hot(labels, ways).double().sum(1)[..., None]
    scale = float(model.log_distance_scale.detach().exp())
    refined = _direct(start, counts, weigh(z[:, n:]), scale, 3)
    expected = -scale * torch.cdist(weigh(z[:, n:]), refined).pow(2)
    torch.testing.assert_close(logits, expected)
    # Without steps, the support's centroids alone.
    plain = dataclasses.replace(model.config, soft_kmeans_steps=0)
    model.config = plain
    torch.testing.assert_close(
        model.readout_logits(z, v, ways, labels),
        -scale * torch.cdist(weigh(z[:, n:]), start).pow(2),
    )


def test_the_steps_need_the_centroid_read_out() -> None:
    with pytest.raises(ValueError, match="soft_kmeans_steps"):
        MetaConfig(readout="head", soft_kmeans_steps=2)
    with pytest.raises(ValueError, match="soft_kmeans_steps"):
        dataclasses.replace(TINY_CONV4, soft_kmeans_steps=-1)


def test_no_adaptation_refines_like_the_read_out() -> None:
    """The no-adaptation baseline takes the read-out's soft k-means steps too, so that
    adapting and not adapting differ only in the context; the steps change its answers
    here (drawn until they do, so the comparison is not vacuous)."""
    tight = SolverConfig(memory=8, max_iter=300, tol=1e-11)
    for _ in range(20):
        model = _model(5)
        g = torch.Generator().manual_seed(_seed())
        support = torch.rand(2, 3, 1, 16, 16, generator=g, dtype=torch.float64)
        query = torch.rand(2, 8, 1, 16, 16, generator=g, dtype=torch.float64)
        labels = torch.tensor([[0, 1, 2], [2, 0, 1]])
        zero = torch.zeros(2, model.context_size, dtype=torch.float64)
        with torch.no_grad():
            logits = query_logits(model, query, zero, 3, tight, support, labels)
            refined = centroid_predictions(model, support, labels, query, 3, tight)
            model.config = dataclasses.replace(model.config, soft_kmeans_steps=0)
            plain = centroid_predictions(model, support, labels, query, 3, tight)
        assert torch.equal(refined, logits.argmax(-1))
        if not torch.equal(refined, plain):
            return
    pytest.fail("the soft k-means steps never changed a prediction in 20 draws")


def test_the_settings_override_the_model_steps_without_changing_it() -> None:
    """``AdaptConfig.soft_kmeans_steps`` (what ``jiio adapt --soft-kmeans-steps`` sets)
    gives the read-out of a model trained with that many steps, and leaves the model's
    own setting alone."""
    tight = SolverConfig(memory=8, max_iter=300, tol=1e-11)
    model = _model(5)
    plain = _model(0)
    plain.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(_seed())
    support = torch.rand(2, 3, 1, 16, 16, generator=g, dtype=torch.float64)
    query = torch.rand(2, 8, 1, 16, 16, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2], [2, 0, 1]])
    v = 0.3 * torch.randn(2, model.context_size, generator=g, dtype=torch.float64)
    settings = AdaptConfig(soft_kmeans_steps=0)
    steps = task_soft_kmeans_steps(model, settings)
    with torch.no_grad():
        overridden = query_logits(model, query, v, 3, tight, support, labels, steps)
        torch.testing.assert_close(
            overridden, query_logits(plain, query, v, 3, tight, support, labels)
        )
        torch.testing.assert_close(
            centroid_predictions(model, support, labels, query, 3, tight, steps),
            centroid_predictions(plain, support, labels, query, 3, tight),
        )
    assert model.config.soft_kmeans_steps == 5
    assert task_soft_kmeans_steps(model, AdaptConfig()) == 5
    with pytest.raises(ValueError, match="soft k-means steps"):
        task_soft_kmeans_steps(model, AdaptConfig(soft_kmeans_steps=-1))
    head = FiLMClassifier(MetaConfig(readout="head"))
    with pytest.raises(ValueError, match="centroids read-out"):
        task_soft_kmeans_steps(head, AdaptConfig(soft_kmeans_steps=2))
