"""Few-shot adaptation of a FiLM-conditioned DEQ: the inner problem, predictions, meta-loss.

A task (episode) has N classes, support images with labels and query images. The model
(:class:`~jiio_cli.models.FiLMClassifier`) sees each task as one row of n images sharing a
context vector v ∈ ℝᴰ (PAPER.md §5). Adaptation fits v on the support set:

    v* = argmin_v  (1/n) Σ_i CE(h(z*_i)[:N], y_i) + λ · mean(v²),   z*_i = f(z*_i, v; image_i)

by JIIO (or, as the baseline, by Adam on v with a full forward and adjoint solve per step).
Logits are the first N of the head's K ≥ N outputs, so one model serves N ≤ K ways.
Queries are then classified by solving their DEQ at v*: by the head, or, for a model with
the ``centroids`` read-out, by their distances to the class centroids of the support
features at v* (the head then only serves the inner objective).

Meta-training minimises L_q = CE(query) at v*. Its gradient has two parts:

* through the query fixed point, by implicit differentiation (PAPER.md §4) at v*, whose
  adjoint solve is warm-started from JIIO's support adjoint μ*: query image j of class k
  starts from the mean μ* of the support images of class k, rescaled by the least-squares
  factor of :func:`~jiio_cli.engine.implicit_fixed_point`;
* through v*(θ) (optional, ``hyper_step`` η > 0): dv*/dθ = −H⁻¹ ∂g/∂θ with g the support
  gradient in v, approximated by −η ∂g/∂θ (see :func:`support_gradient`). With η = 0 this
  is the first-order meta-gradient, which cannot teach the FiLM map to make v matter when
  v* starts near 0 (its gradient is proportional to v*).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jiio_cli.data.augment import Augmentation, augment
from jiio_cli.data.episodes import EpisodeBatch
from jiio_cli.engine import (
    InputOptResult,
    InputProblem,
    JIIOConfig,
    NaiveConfig,
    SolverConfig,
    implicit_fixed_point,
    jacobian_penalty,
    jiio_solve,
    naive_solve,
)
from jiio_cli.engine.problem import Objective
from jiio_cli.models import FiLMClassifier
from jiio_cli.models.meta import class_means
from jiio_cli.tasks.fewshot.context_solve import solve_at_contexts
from jiio_cli.tasks.fewshot.inner_solvers import jiio_inner_settings, naive_inner_settings

__all__ = [
    "AdaptConfig",
    "MetaLoss",
    "adapt_context",
    "adapt_episodes",
    "centroid_predictions",
    "class_matched_warm_start",
    "classify_episodes",
    "meta_loss",
    "query_logits",
    "query_logits_with_residual",
    "support_gradient",
    "support_objective",
    "support_rows",
    "task_transductive_weight",
    "task_variable_size",
]


@dataclass(frozen=True)
class AdaptConfig:
    """How the context v is fitted on a support set.

    Attributes:
        method: ``jiio`` or ``naive`` (Adam on v, full solves per step).
        context_weight: λ of the penalty λ·mean(v²).
        transductive_weight: β of the queries' term (see
            :class:`~jiio_cli.models.MetaConfig`); None: the model's own.
        soft_kmeans_steps: K soft k-means steps on the queries before the centroid
            read-out (see :class:`~jiio_cli.models.MetaConfig`); None: the model's own.
        jiio: settings of :func:`~jiio_cli.engine.jiio_solve`.
        naive: settings of :func:`~jiio_cli.engine.naive_solve`.
        forward: solver of the query fixed points at v*.
    """

    method: Literal["jiio", "naive"] = "jiio"
    context_weight: float = 1.0
    transductive_weight: float | None = None
    soft_kmeans_steps: int | None = None
    jiio: JIIOConfig = field(default_factory=lambda: jiio_inner_settings(1.0, 0.5, 10, 40))
    naive: NaiveConfig = field(default_factory=lambda: naive_inner_settings(20, 0.1))
    forward: SolverConfig = field(
        default_factory=lambda: SolverConfig(memory=5, max_iter=40, tol=1e-4)
    )

    def __post_init__(self) -> None:
        if self.soft_kmeans_steps is not None and self.soft_kmeans_steps < 0:
            raise ValueError(f"soft k-means steps must be >= 0, got {self.soft_kmeans_steps}")


PSEUDO_QUERY_SEED = 0
"""Seed of the pseudo-queries' warps: the same fields for every call, so a task's inner
objective is one deterministic function of v (the meta-gradient re-evaluates it)."""


def support_rows(model: FiLMClassifier, support: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The images (B, n', c, S, S) the inner problem solves, and their labels (B, n').

    The support itself, or with ``support_loss="pseudo-queries"`` the support followed
    by ``pseudo_copies`` jittered copies of it (n' = n·(1 + copies), copy j of image i at
    position n·(j + 1) + i): each copy is the image under a random affine jitter
    (``pseudo_affine`` > 0), then a random elastic warp (``pseudo_warp`` > 0).
    """
    config = model.config
    if config.support_loss != "pseudo-queries":
        return support, labels
    steps = [
        Augmentation(kind, amount)  # type: ignore[arg-type]
        for kind, amount in (("affine", config.pseudo_affine), ("elastic", config.pseudo_warp))
        if amount > 0
    ]
    generator = torch.Generator().manual_seed(PSEUDO_QUERY_SEED)
    flat = support.flatten(0, 1)
    copies = []
    for _ in range(config.pseudo_copies):
        copy = flat
        for step in steps:
            copy = augment(copy, step, generator)
        copies.append(copy.view_as(support))
    return torch.cat([support, *copies], dim=1), labels.repeat(1, config.pseudo_copies + 1)


def support_objective(
    model: FiLMClassifier,
    labels: Tensor,
    ways: int,
    context_weight: float,
    *,
    queries: int = 0,
    transductive_weight: float = 0.0,
):  # -> Objective
    """ℓ(z, v) = mean_i CE(logits_i, y_i) + λ mean(v_c²) per task row, (B,), plus with
    β = ``transductive_weight`` > 0 the queries' mixture term and the offsets' penalty.

    The logits are the head's, h(z_i)[:N], or with ``support_loss="centroids"`` the
    centroid read-out of the support states against their own class means,
    −s‖φ(z_i) − c_k‖², or with ``"pseudo-queries"`` the centroid read-out of the warped
    copies against the clean support's class means, the mean then over the copies (see
    :class:`~jiio_cli.models.MetaConfig`). v_c is the context part of v; the centroid
    offsets δ (B, N, E) that a transductive task variable carries after it add
    β·mean_q(−log Σ_k exp(−s‖φ(z_q) − c_k − δ_k‖²)) + ω·mean_k ‖δ_k‖² (ω the model's
    ``offset_weight``), z_q the last ``queries`` rows of z.

    Args:
        model: the meta-model.
        labels: (B, n') labels in 0..N−1 of the rows of :func:`support_rows`.
        ways: N.
        context_weight: λ.
        queries: how many unlabelled query rows follow the support rows in z.
        transductive_weight: β (used when ``queries`` > 0).
    """
    loss = model.config.support_loss
    n_rows = labels.shape[1]
    n_clean = n_rows // (model.config.pseudo_copies + 1) if loss == "pseudo-queries" else n_rows
    # The centroid losses score rows first..n_rows−1 (all, or the copies) against the class
    # means of the first n_clean rows; the query rows after them join the same call.
    first = n_clean if loss == "pseudo-queries" else 0
    targets = labels[:, first:]
    clean_labels = labels[:, :n_clean]
    context = model.context_size
    offset_weight = model.config.offset_weight

    def centroid_logits(z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        logits = model.centroid_logits(z[:, first:], z[:, :n_clean], clean_labels, ways, v)
        return logits[:, : n_rows - first], logits[:, n_rows - first :]

    def head_logits(z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        support = model.logits(z[:, :n_rows], v, ways)
        if queries == 0:
            return support, support[:, :0]
        query = model.centroid_logits(z[:, n_rows:], z[:, :n_clean], clean_labels, ways, v)
        return support, query

    # Chosen once: the objective is evaluated at every iteration of the solve.
    logits_of = head_logits if loss == "head" else centroid_logits

    def objective(z: Tensor, v: Tensor) -> Tensor:
        support, query = logits_of(z, v)  # (B, n' − first, N), (B, m, N)
        ce = F.cross_entropy(support.flatten(0, 1), targets.flatten(), reduction="none")
        penalty = context_weight * v[:, :context].pow(2).mean(dim=1)
        value = ce.view(targets.shape).mean(dim=1) + penalty
        if queries == 0:
            return value
        offsets = model.centroid_offsets(v, ways)
        spread = 0.0 if offsets is None else offset_weight * offsets.pow(2).sum(-1).mean(1)
        mixture = -query.logsumexp(dim=-1).mean(dim=1)
        return value + transductive_weight * mixture + spread

    return objective


def task_transductive_weight(model: FiLMClassifier, settings: AdaptConfig) -> float:
    """β of the inner problem: the settings' override, else the model's own."""
    beta = settings.transductive_weight
    if beta is None:
        return model.config.transductive_weight
    if beta > 0 and model.config.readout != "centroids":
        raise ValueError("a transductive inner problem needs the centroids read-out")
    return beta


def task_soft_kmeans_steps(model: FiLMClassifier, settings: AdaptConfig) -> int:
    """K of the read-out: the settings' override, else the model's own."""
    steps = model.readout_steps(settings.soft_kmeans_steps)
    if steps > 0 and model.config.readout != "centroids":
        raise ValueError("soft k-means steps need the centroids read-out")
    return steps


def task_variable_size(model: FiLMClassifier, ways: int, transductive_weight: float) -> int:
    """Entries of the task variable JIIO fits: the context, plus N·E centroid offsets when
    the inner problem is transductive (β > 0)."""
    offsets = ways * model.feature_dim if transductive_weight > 0 else 0
    return model.context_size + offsets


def context_scale(model: FiLMClassifier, film_scale: float) -> tuple[float, ...] | None:
    """JIIO's diagonal preconditioner of v (``JIIOConfig.x_scale``): ``film_scale`` on
    the FiLM code, 1 on the read-out parts (offsets, metric weights); None when
    ``film_scale`` is 1.

    The two parts of v act very differently: the FiLM code modulates every layer of the
    cell, the read-out offsets enter the logits linearly. A factor below 1 takes smaller
    steps on the FiLM code and counts it more in Anderson's least squares.
    """
    if film_scale == 1.0:
        return None
    film = model.config.context_dim
    return (film_scale,) * film + (1.0,) * (model.context_size - film)


def adapt_context(
    model: FiLMClassifier,
    support: Tensor,
    labels: Tensor,
    ways: int,
    settings: AdaptConfig,
    method: Literal["jiio", "naive"] | None = None,
    query: Tensor | None = None,
) -> InputOptResult:
    """Fit v on each task's support set; the result's ``x`` is v* (B, D).

    Its ``z`` and ``mu`` are those of the rows of :func:`support_rows`: the support
    images, followed by their pseudo-queries for a model with that support loss. A
    transductive inner problem (β > 0, :func:`task_transductive_weight`) also needs the
    task's query images (B, m, c, S, S): they follow as unlabelled rows, and ``x`` is
    then the task variable [v*; δ*] (B, D + N·E), which the read-out functions accept
    in place of v.

    Args:
        model: the meta-model.
        support: (B, n, c, S, S) support images.
        labels: (B, n) their labels in 0..N−1.
        ways: N.
        settings: step sizes, budgets and λ.
        method: overrides ``settings.method``.
        query: (B, m, c, S, S) the tasks' query images (transductive problems only).

    Raises:
        ValueError: a transductive problem without its query images.
    """
    rows, row_labels = support_rows(model, support, labels)
    beta = task_transductive_weight(model, settings)
    rows, queries = _with_queries(rows, query, beta)
    return _adapt_rows(
        model, rows, row_labels, ways, settings, method or settings.method, queries, beta
    )


def _with_queries(rows: Tensor, query: Tensor | None, beta: float) -> tuple[Tensor, int]:
    """The inner problem's rows: the task rows (B, n', …), followed for a transductive
    problem (β > 0) by the task's queries (B, m, …) unlabelled; and m (0 without them).

    Raises:
        ValueError: a transductive problem without its query images.
    """
    if beta <= 0:
        return rows, 0
    if query is None:
        raise ValueError("a transductive inner problem needs the task's query images")
    return torch.cat([rows, query], dim=1), query.shape[1]


def adapt_episodes(
    model: FiLMClassifier,
    episodes: EpisodeBatch,
    settings: AdaptConfig,
    method: Literal["jiio", "naive"] | None = None,
) -> InputOptResult:
    """:func:`adapt_context` on a batch of episodes (whose queries join a transductive
    inner problem)."""
    return adapt_context(
        model,
        episodes.support,
        episodes.support_labels,
        episodes.ways,
        settings,
        method,
        episodes.query,
    )


def classify_episodes(
    model: FiLMClassifier,
    episodes: EpisodeBatch,
    settings: AdaptConfig,
    method: Literal["jiio", "naive"] | None = None,
) -> tuple[Tensor, InputOptResult, Tensor]:
    """Adapt to each episode, then classify its queries: the query logits (B, m, N) at the
    fitted task variable, the support solve, and the read-out solves' relative residuals
    (B,) (see :func:`query_logits_with_residual`)."""
    result = adapt_episodes(model, episodes, settings, method)
    logits, residual = query_logits_with_residual(
        model,
        episodes.query,
        result.x,
        episodes.ways,
        settings.forward,
        episodes.support,
        episodes.support_labels,
        task_soft_kmeans_steps(model, settings),
    )
    return logits, result, residual


def _adapt_rows(
    model: FiLMClassifier,
    rows: Tensor,
    row_labels: Tensor,
    ways: int,
    settings: AdaptConfig,
    method: Literal["jiio", "naive"],
    queries: int = 0,
    transductive_weight: float = 0.0,
) -> InputOptResult:
    """:func:`adapt_context` on rows already built by :func:`support_rows` (and the
    ``queries`` unlabelled query rows after them)."""
    with torch.no_grad():
        model.bind(rows)
        cell = model.context_cell()
    batch = rows.shape[0]
    beta = transductive_weight if queries > 0 else 0.0
    size = task_variable_size(model, ways, beta)
    objective = _rows_objective(model, row_labels, ways, settings, queries, beta)
    problem = InputProblem(
        cell, objective, z0=model.init_state(batch), x0=rows.new_zeros(batch, size)
    )
    jiio = settings.jiio
    if jiio.x_scale is not None and len(jiio.x_scale) < size:
        # The offsets enter the read-out linearly, like the other read-out parts: factor 1.
        jiio = replace(jiio, x_scale=jiio.x_scale + (1.0,) * (size - len(jiio.x_scale)))
    try:
        if method == "jiio":
            return jiio_solve(problem, jiio)
        return naive_solve(problem, settings.naive)
    finally:
        model.unbind()


def _rows_objective(
    model: FiLMClassifier,
    row_labels: Tensor,
    ways: int,
    settings: AdaptConfig,
    queries: int,
    transductive_weight: float,
):  # -> Objective
    """:func:`support_objective` of task rows with ``queries`` unlabelled rows after them."""
    return support_objective(
        model,
        row_labels,
        ways,
        settings.context_weight,
        queries=queries,
        transductive_weight=transductive_weight,
    )


def query_states(
    model: FiLMClassifier, images: Tensor, context: Tensor, solver: SolverConfig
) -> Tensor:
    """Fixed points z* (B, m, C, H, W) of images (B, m, c, S, S) at contexts (B, D)."""
    return solve_at_contexts(model, images, context, solver).z


def query_logits_with_residual(
    model: FiLMClassifier,
    images: Tensor,
    context: Tensor,
    ways: int,
    solver: SolverConfig,
    support: Tensor | None = None,
    support_labels: Tensor | None = None,
    soft_kmeans_steps: int | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`query_logits` and the relative fixed-point residual (B,) of each task row's
    read-out solve (the largest over the solver's residual entries): whether the DEQ
    converged at test time."""
    solution = solve_at_contexts(model, _readout_rows(model, support, images), context, solver)
    with torch.no_grad():
        logits = model.readout_logits(
            solution.z, context, ways, support_labels, soft_kmeans_steps=soft_kmeans_steps
        )
    return logits, solution.stats.residual.amax(dim=1)


def query_logits(
    model: FiLMClassifier,
    images: Tensor,
    context: Tensor,
    ways: int,
    solver: SolverConfig,
    support: Tensor | None = None,
    support_labels: Tensor | None = None,
    soft_kmeans_steps: int | None = None,
) -> Tensor:
    """Logits (B, m, N) of images (B, m, c, S, S) at the adapted contexts (B, D).

    A model with the ``centroids`` read-out also needs the task's support images
    (B, n, c, S, S) and labels (B, n): their fixed points at the same contexts give the
    class centroids (solved in one batch with the queries), which then take
    ``soft_kmeans_steps`` steps on the queries (None: the model's own).
    """
    logits, _ = query_logits_with_residual(
        model, images, context, ways, solver, support, support_labels, soft_kmeans_steps
    )
    return logits


def _readout_rows(model: FiLMClassifier, support: Tensor | None, query: Tensor) -> Tensor:
    """The images whose fixed points the read-out needs: the queries (B, m, c, S, S), and
    for the ``centroids`` read-out the support images before them (B, n + m, c, S, S)."""
    if model.config.readout == "head":
        return query
    if support is None:
        raise ValueError("the centroids read-out needs the support images and labels")
    return torch.cat([support, query], dim=1)


def centroid_predictions(
    model: FiLMClassifier,
    support: Tensor,
    labels: Tensor,
    query: Tensor,
    ways: int,
    solver: SolverConfig,
    soft_kmeans_steps: int | None = None,
) -> Tensor:
    """The no-adaptation baseline: nearest class centroid of the DEQ features at v = 0.

    Features are the head's pooled features (B, n, C) of the fixed points at v = 0; each
    query is given the class whose mean support feature is nearest in Euclidean distance,
    after ``soft_kmeans_steps`` soft k-means steps on the queries (None: as many as the
    model's read-out takes, ``MetaConfig.soft_kmeans_steps``), so that adapting and not
    adapting differ only in the context when both are given the same steps.

    Returns:
        Predicted labels (B, m).
    """
    zero = support.new_zeros(support.shape[0], model.context_size)
    with torch.no_grad():
        support_z = query_states(model, support, zero, solver)
        query_z = query_states(model, query, zero, solver)
        steps = model.readout_steps(soft_kmeans_steps)
        logits = model.centroid_logits(query_z, support_z, labels, ways, None, steps)
        return logits.argmax(dim=-1)


def class_matched_warm_start(
    mu: Tensor, support_labels: Tensor, query_labels: Tensor, ways: int
) -> Tensor:
    """Warm start of the query adjoint: per query, the mean support μ* of its class.

    Args:
        mu: support adjoint (B, n, *s) from JIIO.
        support_labels: (B, n); query_labels: (B, m).

    Returns:
        (B, m, *s).
    """
    flat = mu.flatten(2)
    per_class = class_means(flat, support_labels, ways)
    picked = torch.gather(per_class, 1, query_labels[..., None].expand(-1, -1, flat.shape[-1]))
    return picked.view(*query_labels.shape, *mu.shape[2:])


def support_gradient(
    model: FiLMClassifier,
    support: Tensor,
    labels: Tensor,
    ways: int,
    settings: AdaptConfig,
    inner: InputOptResult,
    query: Tensor | None = None,
) -> Tensor:
    """∇_v of the support Lagrangian at JIIO's (z*, v*, μ*), differentiable w.r.t. θ, (B, D).

    g(θ) = ∇_v ℓ(z*, v*) + (∂f/∂v)ᵀ μ* with z*, v*, μ* held constant. At the inner optimum
    g = 0; its θ-derivative is what carries the dependence of v* on θ: by the implicit
    function theorem dv*/dθ = −H⁻¹ ∂g/∂θ (H the reduced Hessian in v), which the meta-loss
    approximates by the first Neumann term −η ∂g/∂θ (H⁻¹ ≈ η I, as one unrolled gradient
    step of size η would give). A transductive problem's Lagrangian holds the task's
    queries (B, m, c, S, S) too, as in :func:`adapt_context`.
    """
    rows, row_labels = support_rows(model, support, labels)
    beta = task_transductive_weight(model, settings)
    rows, queries = _with_queries(rows, query, beta)
    objective = _rows_objective(model, row_labels, ways, settings, queries, beta)
    return _rows_gradient(model, rows, inner, objective)


def _rows_gradient(
    model: FiLMClassifier, rows: Tensor, inner: InputOptResult, objective: Objective
) -> Tensor:
    """:func:`support_gradient` on rows already built by :func:`support_rows` (and the
    unlabelled query rows after them, of a transductive problem), whose inner objective
    is ``objective`` (:func:`_rows_objective`)."""
    model.bind(rows)
    try:
        cell = model.context_cell()
        z = inner.z.detach()
        v = inner.x.detach().requires_grad_(True)
        lagrangian = objective(z, v).sum() + (inner.mu.detach() * cell(z, v)).sum()
        (g,) = torch.autograd.grad(lagrangian, v, create_graph=True)
    finally:
        model.unbind()
    return g


def _task_variable(
    model: FiLMClassifier,
    rows: Tensor,
    row_labels: Tensor,
    query: Tensor,
    ways: int,
    settings: AdaptConfig,
    hyper_step: float,
) -> tuple[InputOptResult, Tensor]:
    """A meta-training step's inner solve on its task rows, and the task variable the outer
    loss reads: value v*, θ-derivative −η ∂g/∂θ (the first Neumann term of
    −H⁻¹ ∂²J/∂v∂θ; none when η = 0).

    A transductive inner problem fits the task variable to the episode's queries too: they
    follow the support rows unlabelled, as at test time (:func:`adapt_context`).
    """
    beta = task_transductive_weight(model, settings)
    inner_rows, queries = _with_queries(rows, query, beta)
    inner = _adapt_rows(
        model, inner_rows.detach(), row_labels, ways, settings, settings.method, queries, beta
    )
    context = inner.x.detach()
    if hyper_step > 0:
        objective = _rows_objective(model, row_labels, ways, settings, queries, beta)
        g = _rows_gradient(model, inner_rows, inner, objective)
        context = context - hyper_step * (g - g.detach())
    return inner, context


@dataclass
class MetaLoss:
    """One meta-training step's loss and what it measured.

    Attributes:
        loss: CE(query) + Jacobian weight · penalty, differentiable w.r.t. θ.
        query_ce: the query cross-entropy alone (float).
        query_accuracy: fraction of queries classified right at v* (float).
        inner: the support solve.
    """

    loss: Tensor
    query_ce: float
    query_accuracy: float
    inner: InputOptResult


def meta_loss(
    model: FiLMClassifier,
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    query_labels: Tensor,
    ways: int,
    settings: AdaptConfig,
    *,
    hyper_step: float = 0.0,
    jacobian_weight: float = 0.0,
    adjoint: SolverConfig | None = None,
    generator: torch.Generator | None = None,
    warm_start: bool = True,
) -> MetaLoss:
    """The outer loss of one batch of tasks (see the module docstring for the gradient).

    Args:
        model: the meta-model being trained.
        support, support_labels, query, query_labels: the episodes, (B, n, c, S, S),
            (B, n), (B, m, c, S, S), (B, m).
        ways: N.
        settings: the inner solve.
        hyper_step: η of the Neumann term of the hypergradient (0: first order only).
        jacobian_weight: weight of the Hutchinson estimate of ‖∂f/∂z‖²_F at the query
            fixed points.
        adjoint: solver of the implicit backward pass.
        generator: source of the Hutchinson probes.
        warm_start: start the backward solve from the class-matched support μ*.
    """
    # Built once: the pseudo-queries' warps are the same for the solve and its gradient.
    rows, row_labels = support_rows(model, support, support_labels)
    if model.config.encoder == "conv4":
        # One encoder pass (one set of BatchNorm statistics) serves every solve below: the
        # model binds embeddings (B, n, E) in place of images.
        embedded = model.embed(torch.cat([rows, query], dim=1))
        n_rows = rows.shape[1]
        rows, query = embedded[:, :n_rows], embedded[:, n_rows:]
        support = rows[:, : support.shape[1]]
    inner, context = _task_variable(model, rows, row_labels, query, ways, settings, hyper_step)
    # The centroid read-out differentiates through the support fixed points at v* too:
    # support and query images are solved as one row of n + m images.
    images = _readout_rows(model, support, query)
    z_star = query_states(model, images.detach(), context, settings.forward)
    # Bound with autograd (the outer loss trains the image injection too) and frozen, because
    # the implicit backward evaluates f after this function has returned.
    model.bind(images)
    cell = model.context_cell()
    model.unbind()
    start = None
    if warm_start:
        # The support's own μ* (without pseudo-queries' rows after it).
        mu = inner.mu[:, : support.shape[1]]
        start = class_matched_warm_start(mu, support_labels, query_labels, ways)
        if images.shape[1] > query.shape[1]:  # the support rows come first
            start = torch.cat([mu, start], dim=1)
    z = implicit_fixed_point(
        cell,
        z_star,
        context,
        adjoint or SolverConfig(memory=5, max_iter=30, tol=1e-4),
        warm_start=start,
    )
    logits = model.readout_logits(z, context, ways, support_labels)
    ce = F.cross_entropy(logits.flatten(0, 1), query_labels.flatten())
    loss = ce
    if jacobian_weight > 0:
        loss = (
            loss
            + jacobian_weight * jacobian_penalty(cell, z_star, context, generator=generator).mean()
        )
    accuracy = float((logits.argmax(-1) == query_labels).float().mean())
    return MetaLoss(loss, float(ce.detach()), accuracy, inner)
