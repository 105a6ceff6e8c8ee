"""The transductive inner problem: centroid offsets fitted on the unlabelled queries.

A meta-model with ``transductive_weight`` β > 0 fits a task variable [v; δ] (context and
one centroid offset per class) on its support objective plus β times the queries'
negative log-likelihood under the mixture centred on the shifted centroids. Checked in
float64 on tiny models: the objective against its formula written out, stationarity of
JIIO's result by central differences with every fixed point re-solved, equivariance in
the order of the queries; and the ProtoNet yardstick's soft k-means against a hand
computation.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from meta_models import TINY_CONV4, stationarity_gap, tight_adapt_settings
from torch import Tensor

from jiio_cli.data.episodes import EpisodeBatch
from jiio_cli.engine import SolverConfig
from jiio_cli.models import FiLMClassifier, MetaConfig, ProtoNet, ProtoNetConfig
from jiio_cli.models.meta import class_means
from jiio_cli.tasks.fewshot.classification import (
    AdaptConfig,
    adapt_context,
    meta_loss,
    query_logits,
    query_states,
    support_objective,
    support_rows,
    task_variable_size,
)
from jiio_cli.tasks.fewshot.protonet import protonet_predictions, soft_kmeans_prototypes

WAYS = 3
BETA = 2.0
TIGHT = SolverConfig(memory=8, max_iter=300, tol=1e-11)


def _model(seed: int, beta: float = BETA) -> FiLMClassifier:
    torch.manual_seed(seed)
    config = dataclasses.replace(TINY_CONV4, ways=WAYS, transductive_weight=beta)
    return FiLMClassifier(config).double().eval()


def _episode(g: torch.Generator, batch: int = 2, queries: int = 2) -> tuple[Tensor, ...]:
    """Support of one image per class, ``queries`` per class, 16×16 images (float64)."""
    support = torch.rand(batch, WAYS, 1, 16, 16, generator=g, dtype=torch.float64)
    query = torch.rand(batch, WAYS * queries, 1, 16, 16, generator=g, dtype=torch.float64)
    labels = torch.arange(WAYS).repeat(batch, 1)
    query_labels = torch.arange(WAYS).repeat_interleave(queries).repeat(batch, 1)
    return support, labels, query, query_labels


def _settings() -> AdaptConfig:
    return tight_adapt_settings(1.0, 0.5, 400, 1e-8)


def _fresh() -> tuple[FiLMClassifier, Tensor, Tensor, Tensor, Tensor]:
    seed = int(torch.randint(0, 2**31 - 1, (1,)))
    g = torch.Generator().manual_seed(seed)
    return (_model(seed), *_episode(g))


def test_the_objective_is_its_formula() -> None:
    model, support, labels, query, _ = _fresh()
    rows, row_labels = support_rows(model, support, labels)
    n_rows, n, m = rows.shape[1], support.shape[1], query.shape[1]
    size = task_variable_size(model, WAYS, BETA)
    assert size == model.context_size + WAYS * model.feature_dim
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, size, generator=g, dtype=torch.float64)
    z = torch.randn(2, n_rows + m, model.feature_dim, generator=g, dtype=torch.float64)
    value = support_objective(model, row_labels, WAYS, 0.7, queries=m, transductive_weight=BETA)(
        z, v
    )

    scale = float(model.log_distance_scale.detach().exp())
    features = model.features(z)
    offsets = v[:, model.context_size :].reshape(2, WAYS, -1)
    centroids = class_means(features[:, :n], labels, WAYS) + offsets

    def logits(rows_features: Tensor) -> Tensor:
        return -scale * torch.cdist(rows_features, centroids).pow(2)

    copies = logits(features[:, n:n_rows])
    ce = F.cross_entropy(copies.flatten(0, 1), row_labels[:, n:].flatten(), reduction="none")
    mixture = -logits(features[:, n_rows:]).logsumexp(-1).mean(1)
    expected = (
        ce.view(2, -1).mean(1)
        + 0.7 * v[:, : model.context_size].pow(2).mean(1)
        + BETA * mixture
        + model.config.offset_weight * offsets.pow(2).sum(-1).mean(1)
    )
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    # Without queries: the support's term alone, at the context alone (no offsets).
    inductive = support_objective(model, row_labels, WAYS, 0.7)(
        z[:, :n_rows], v[:, : model.context_size]
    )
    plain = class_means(features[:, :n], labels, WAYS)
    copies = -scale * torch.cdist(features[:, n:n_rows], plain).pow(2)
    ce = F.cross_entropy(copies.flatten(0, 1), row_labels[:, n:].flatten(), reduction="none")
    expected = ce.view(2, -1).mean(1) + 0.7 * v[:, : model.context_size].pow(2).mean(1)
    torch.testing.assert_close(inductive, expected, rtol=1e-10, atol=1e-10)


def test_jiio_reaches_a_stationary_task_variable() -> None:
    """The reduced objective J(x) = ℓ(z*(x), x), every fixed point (support,
    pseudo-queries and queries) re-solved, is stationary at JIIO's result on the rows it
    reports converged (one-sided differences, see :func:`stationarity_gap`), for context
    and offset entries alike; at x = 0 it is not."""
    for _ in range(6):
        model, support, labels, query, _ = _fresh()
        result = adapt_context(model, support, labels, WAYS, _settings(), query=query)
        if bool(result.converged.any()):
            break
    else:
        pytest.fail(f"JIIO converged on no row of six draws: {result.residual_x}")
    rows, row_labels = support_rows(model, support, labels)
    every_row = torch.cat([rows, query], dim=1)
    objective = support_objective(
        model, row_labels, WAYS, 1.0, queries=query.shape[1], transductive_weight=BETA
    )
    done = result.converged
    assert result.x.shape[1] == task_variable_size(model, WAYS, BETA)

    def gap(x: Tensor, h: float) -> Tensor:
        return stationarity_gap(model, objective, every_row, x, entries, h, TIGHT)[:, done]

    offsets = range(model.context_size, result.x.shape[1], 7)
    entries = [*range(model.context_size), *offsets]
    at_zero = gap(torch.zeros_like(result.x), 1e-6)
    assert (at_zero.amax(0) > 1e-4).all()
    assert torch.minimum(gap(result.x, 1e-5), gap(result.x, 1e-6)).max() < 1e-5


def test_meta_training_solves_the_transductive_inner_problem() -> None:
    """A meta-training step of a transductive model fits its task variable to the queries
    too: the inner solve of :func:`meta_loss` is :func:`adapt_context`'s with the queries,
    offsets included."""
    model, support, labels, query, query_labels = _fresh()
    settings = _settings()
    step = meta_loss(model, support, labels, query, query_labels, WAYS, settings, adjoint=TIGHT)
    test_time = adapt_context(model, support, labels, WAYS, settings, query=query)
    assert step.inner.x.shape[1] == task_variable_size(model, WAYS, BETA)
    torch.testing.assert_close(step.inner.x, test_time.x, rtol=1e-6, atol=1e-8)
    # The queries move the centroids: the fitted offsets are not the initial zeros.
    assert step.inner.x[:, model.context_size :].abs().amax() > 1e-4
    assert torch.isfinite(step.loss)


def test_the_offsets_shift_the_read_out_centroids() -> None:
    model, support, labels, query, _ = _fresh()
    context = torch.zeros(2, model.context_size, dtype=torch.float64)
    offsets = torch.randn(2, WAYS, model.feature_dim, dtype=torch.float64)
    shifted = query_logits(
        model, query, torch.cat([context, offsets.flatten(1)], 1), WAYS, TIGHT, support, labels
    )
    z = query_states(model, torch.cat([support, query], 1), context, TIGHT)
    features = model.features(z)
    centroids = class_means(features[:, : support.shape[1]], labels, WAYS) + offsets
    scale = float(model.log_distance_scale.detach().exp())
    expected = -scale * torch.cdist(features[:, support.shape[1] :], centroids).pow(2)
    torch.testing.assert_close(shifted, expected.detach(), rtol=1e-9, atol=1e-9)


def test_predictions_follow_the_queries_order() -> None:
    """The objective treats the queries as a set: shuffling them shuffles the logits and
    leaves the fitted task variable as it was (up to the solver's tolerance)."""
    settings = _settings()
    for _ in range(6):
        model, support, labels, query, _ = _fresh()
        order = torch.randperm(query.shape[1])
        first = adapt_context(model, support, labels, WAYS, settings, query=query)
        second = adapt_context(model, support, labels, WAYS, settings, query=query[:, order])
        both = first.converged & second.converged
        if bool(both.any()):
            break
    else:
        pytest.fail("no row converged under both orders on six draws")
    torch.testing.assert_close(first.x[both], second.x[both], rtol=0, atol=1e-5)
    a = query_logits(model, query, first.x, WAYS, TIGHT, support, labels)
    b = query_logits(model, query[:, order], second.x, WAYS, TIGHT, support, labels)
    torch.testing.assert_close(a[:, order][both], b[both], rtol=0, atol=1e-4)


def test_a_transductive_problem_needs_the_queries_and_centroids() -> None:
    model, support, labels, _, _ = _fresh()
    with pytest.raises(ValueError, match="query images"):
        adapt_context(model, support, labels, WAYS, _settings())
    with pytest.raises(ValueError, match="transductive_weight must be >= 0"):
        dataclasses.replace(TINY_CONV4, transductive_weight=-1.0)
    with pytest.raises(ValueError, match="needs readout 'centroids'"):
        MetaConfig(transductive_weight=1.0)
    with pytest.raises(ValueError, match="task variable of size"):
        model.centroid_offsets(torch.zeros(2, model.context_size + 5), WAYS)
    # β = 0 in the settings turns a transductive model inductive: no query needed.
    inductive = dataclasses.replace(_settings(), transductive_weight=0.0)
    result = adapt_context(model, support, labels, WAYS, inductive)
    assert result.x.shape[1] == model.context_size


def test_soft_kmeans_against_a_hand_computation() -> None:
    """Two classes on a line: supports at 0 and 4, queries at 1 and 3."""
    support = torch.tensor([[[0.0], [4.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1]])
    query = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)
    p0, p1 = 0.0, 4.0
    for _ in range(2):
        w = []
        for q in (1.0, 3.0):
            a, b = math.exp(-((q - p0) ** 2)), math.exp(-((q - p1) ** 2))
            w.append((a / (a + b), b / (a + b)))
        p0 = (0.0 + w[0][0] * 1 + w[1][0] * 3) / (1 + w[0][0] + w[1][0])
        p1 = (4.0 + w[0][1] * 1 + w[1][1] * 3) / (1 + w[0][1] + w[1][1])
    got = soft_kmeans_prototypes(support, labels, query, 2, steps=2)
    torch.testing.assert_close(got, torch.tensor([[[p0], [p1]]], dtype=torch.float64))
    means = soft_kmeans_prototypes(support, labels, query, 2, steps=0)
    torch.testing.assert_close(means, support)


def test_protonet_without_refinement_is_the_nearest_prototype() -> None:
    torch.manual_seed(0)
    model = ProtoNet(ProtoNetConfig(channels=8, image_size=16)).eval()
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
    support, labels, query, query_labels = _episode(g)
    ep = EpisodeBatch(support.float(), labels, query.float(), query_labels, WAYS)
    plain = protonet_predictions(model, ep)
    with torch.no_grad():
        e = model.embed(torch.cat([ep.support, ep.query], 1))
    n = support.shape[1]
    nearest = torch.cdist(e[:, n:], class_means(e[:, :n], labels, WAYS)).argmin(-1)
    assert torch.equal(plain, nearest)
    refined = protonet_predictions(model, ep, refine_steps=3)
    prototypes = soft_kmeans_prototypes(e[:, :n], labels, e[:, n:], WAYS, 3)
    assert torch.equal(refined, torch.cdist(e[:, n:], prototypes).argmin(-1))
