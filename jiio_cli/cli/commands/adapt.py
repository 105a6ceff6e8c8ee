"""``jiio adapt``: adapt a few-shot meta-model to a new task by optimising its context.

Three modes:

* ``--support DIR --query DIR``: one new task given as folders (one subfolder per class
  in ``support/``; ``query/`` with loose images, or with class subfolders to be scored).
  Prints each query image's predicted class (and the accuracy when labelled).
* ``--episodes N`` (no folders): N held-out episodes (the glyph meta-test alphabets, or
  Omniglot ``--data``: archives or ``alphabet/character`` folders, of which the held-out
  alphabets are used when present), JIIO against the naive inner loop at the same
  number of f-evaluations and the no-adaptation centroid baseline (and, with
  ``--baseline``, a Prototypical Network), paired on the same episodes: mean accuracy
  with a 95 % confidence interval, support objective, timings, solver counts and
  fixed-point residuals. Episodes are drawn ``across`` the pool, ``within`` one alphabet
  (support and queries by disjoint drawers), or ``both`` kinds, one report each.
* ``--dataset sinusoid --episodes N``: the same comparison on N fresh sinusoid
  regression tasks (a sinusoid meta-model; default ``models/meta-sinusoid.safetensors``),
  scored by the query MSE, the baseline being no adaptation (v = 0). Options that mean
  nothing there (``--ways``, ``--data``, ``--support``, ``--query``) are rejected.

The predictions come from the read-out solves: the DEQ fixed points of the images at the
fitted context. They follow the rule of :mod:`jiio_cli.cli.unconverged` (report, then exit
1 unless ``--allow-unconverged``) when their residual ends above the forward solver's
tolerance. The context fit is an inner optimisation stopped at its ``--iterations`` budget:
its objective and residuals are reported, but it is not part of that verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    AllowUnconvergedOption,
    BatchSizeOption,
    DebugOption,
    DeviceOption,
    IterationsOption,
    JsonOption,
    MetaCheckpointOption,
    NaiveStepsOption,
    SeedOption,
    common_options,
    explicit_options,
    in_panel,
)
from jiio_cli.cli.output import emit, print_table
from jiio_cli.cli.partial import FinishedBatches
from jiio_cli.cli.progress import progress_display
from jiio_cli.cli.unconverged import enforce_converged
from jiio_cli.errors import UsageError

__all__ = ["adapt"]


# Defaults that differ by --dataset (None on the command line: the user left them alone).
_GLYPH_DEFAULTS: dict[str, int | float] = {
    "shots": 1,
    "queries": 5,
    "iterations": 40,
    "batch_size": 20,
    "naive_lr": 0.1,
}
# Sinusoid iterations: absent, i.e. the JIIO budget the model was trained with.
# naive_lr 0.03: the best of 0.01-1 for the shipped model's 5-shot tasks, both at JIIO's
# f-evaluations and at 100 steps, on tasks of --seed 1 (the reported figures use --seed 0).
_SINUSOID_DEFAULTS: dict[str, int | float] = {
    "shots": 10,
    "queries": 100,
    "batch_size": 100,
    "naive_lr": 0.03,
}


# How the reports name the kinds of episodes.
_KIND_WORDS = {"across": "across alphabets", "within": "within one alphabet"}


class AdaptCommandConfig(BaseModel):
    """Validated numeric options of ``jiio adapt``."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(pattern="^(glyphs|sinusoid)$")
    episodes: int | None = Field(default=None, ge=1, le=100_000)
    ways: int = Field(ge=2)
    shots: int = Field(ge=1, le=50)
    queries: int = Field(ge=1, le=100)
    iterations: int | None = Field(ge=2, le=10_000)
    naive_steps: int | None = Field(default=None, ge=1)
    naive_lr: float = Field(gt=0)
    batch_size: int = Field(ge=1, le=1000)
    forward_iterations: int | None = Field(default=None, ge=1, le=100_000)
    transductive_weight: float | None = Field(default=None, ge=0, le=1000)
    soft_kmeans_steps: int | None = Field(default=None, ge=0, le=1000)


_Iterations = in_panel(
    IterationsOption,
    None,
    "JIIO iterations on the support set: 40 (sinusoid: as trained).",
    optional=True,
)
_NaiveSteps = in_panel(
    NaiveStepsOption,
    None,
    "--episodes: Adam steps of the naive loop (default: JIIO's f-evals).",
    optional=True,
)
_BatchSize = in_panel(
    BatchSizeOption, None, "Tasks solved together: 20 (sinusoid 100).", optional=True
)
_TransductiveWeight = Annotated[
    float | None,
    typer.Option(
        help="β of the unlabelled queries' term in the inner problem (centroid models): with "
        "β > 0 the fit also sees the queries, so each prediction depends on the others; "
        "0: the support alone (default: the model's own, meta-omniglot 0).",
    ),
]
_SoftKMeansSteps = Annotated[
    int | None,
    typer.Option(
        help="Soft k-means steps on the queries before they are classified (centroid "
        "models): the centroids move towards the queries each class explains, so each "
        "prediction depends on the others; 0: the support's centroids alone (default: the "
        "model's own, meta-omniglot 10).",
    ),
]
_ForwardIterations = Annotated[
    int | None,
    typer.Option(
        "--forward-iterations",
        help="Iteration budget of the read-out solve: the fixed points, at the fitted "
        "context, that the predictions come from (default 40).",
    ),
]


_Support = Annotated[
    Path | None, typer.Option(help="Folder with one subfolder of images per class.")
]
_Query = Annotated[
    Path | None, typer.Option(help="Folder of images to classify (class subfolders: scored).")
]
_Dataset = Annotated[
    str, typer.Option(help="glyphs (classification, the default) or sinusoid (regression).")
]
_Episodes = Annotated[
    int | None, typer.Option(help="Evaluate on N held-out episodes instead of folders.")
]
_Data = Annotated[
    list[Path] | None,
    typer.Option(
        help="--episodes: Omniglot archives or alphabet/character folders, repeatable "
        "(default: glyph meta-test split); their held-out alphabets when present."
    ),
]
_EpisodeKind = Annotated[
    str | None,
    typer.Option(
        help="--episodes: across (any classes), within (one alphabet, support and "
        "queries by different drawers) or both (the default with --data; across "
        "without)."
    ),
]
_Baseline = Annotated[
    Path | None,
    typer.Option(help="--episodes: a Prototypical Network scored on the same episodes."),
]
_Ways = Annotated[int, typer.Option(help="--episodes: classes per episode.")]
_Shots = Annotated[
    int | None,
    typer.Option(help="--episodes: support images per class, 1 (sinusoid: points, 10)."),
]
_Queries = Annotated[
    int | None,
    typer.Option(help="--episodes: query images per class, 5 (sinusoid: points, 100)."),
]
_NaiveLr = Annotated[
    float | None,
    typer.Option(help="Adam's learning rate on the context: 0.1 (sinusoid: 0.03)."),
]


def adapt(
    checkpoint: MetaCheckpointOption = None,
    support: _Support = None,
    query: _Query = None,
    dataset: _Dataset = "glyphs",
    episodes: _Episodes = None,
    data: _Data = None,
    episode_kind: _EpisodeKind = None,
    baseline: _Baseline = None,
    ways: _Ways = 5,
    shots: _Shots = None,
    queries: _Queries = None,
    iterations: _Iterations = None,
    naive_steps: _NaiveSteps = None,
    naive_lr: _NaiveLr = None,
    batch_size: _BatchSize = None,
    forward_iterations: _ForwardIterations = None,
    transductive_weight: _TransductiveWeight = None,
    soft_kmeans_steps: _SoftKMeansSteps = None,
    allow_unconverged: AllowUnconvergedOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
    # Typer fills it in; None when the function is called from Python (nothing typed).
    ctx: typer.Context = None,  # type: ignore[assignment]
) -> None:
    """Adapt a meta-model to a new few-shot task (folders) or evaluate it on held-out episodes.

    If a read-out solve (the fixed points the predictions come from) ends above its
    tolerance, the results are printed and the command exits 1 (0 with
    --allow-unconverged). The context fit stops at its --iterations budget: its objective
    and residuals are reported but are not part of that verdict. With --episodes, Ctrl-C
    prints the results over the batches of episodes finished so far, marked partial, and
    exits 130."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        opts = _command_config(
            dataset,
            episodes=episodes,
            ways=ways,
            naive_steps=naive_steps,
            forward_iterations=forward_iterations,
            transductive_weight=transductive_weight,
            soft_kmeans_steps=soft_kmeans_steps,
            given={
                "shots": shots,
                "queries": queries,
                "iterations": iterations,
                "batch_size": batch_size,
                "naive_lr": naive_lr,
            },
        )
        if dataset == "sinusoid":
            paths = {
                "data": data or None,
                "support": support,
                "query": query,
                "baseline": baseline,
                "transductive-weight": transductive_weight,
                "soft-kmeans-steps": soft_kmeans_steps,
            }
            unconverged, budget = _evaluate_sinusoid(
                checkpoint, opts, _sinusoid_misfits(ctx, paths), common
            )
        else:
            episode_kind = _check_glyph_mode(opts, support, query, data, episode_kind)
            unconverged, budget = _run_glyphs(
                checkpoint, opts, support, query, data or [], episode_kind, baseline, common
            )
        enforce_converged(
            unconverged, allow=allow_unconverged, fix=f"raise --forward-iterations (now {budget})"
        )


def _sinusoid_misfits(
    ctx: typer.Context, paths: dict[str, Path | list[Path] | float | None]
) -> set[str]:
    """The options given that mean nothing for sinusoid tasks: a typed ``--ways`` (it has a
    default, so only a typed one is a misfit) and any of ``paths`` (they default to None)."""
    misfits = explicit_options(ctx, ["ways"])
    return misfits | {name for name, value in paths.items() if value is not None}


def _command_config(
    dataset: str,
    *,
    episodes: int | None,
    ways: int,
    naive_steps: int | None,
    forward_iterations: int | None,
    transductive_weight: float | None = None,
    soft_kmeans_steps: int | None = None,
    given: dict[str, int | float | None],
) -> AdaptCommandConfig:
    """The validated options, each of ``given`` left out (None) taking its ``dataset``'s
    default."""
    defaults = _SINUSOID_DEFAULTS if dataset == "sinusoid" else _GLYPH_DEFAULTS
    resolved = {k: v if v is not None else defaults.get(k) for k, v in given.items()}
    return AdaptCommandConfig(
        dataset=dataset,
        episodes=episodes,
        ways=ways,
        shots=resolved["shots"],
        queries=resolved["queries"],
        iterations=resolved["iterations"],
        naive_steps=naive_steps,
        forward_iterations=forward_iterations,
        transductive_weight=transductive_weight,
        soft_kmeans_steps=soft_kmeans_steps,
        naive_lr=resolved["naive_lr"],
        batch_size=resolved["batch_size"],
    )


def _check_glyph_mode(
    opts: AdaptCommandConfig,
    support: Path | None,
    query: Path | None,
    data: list[Path] | None,
    episode_kind: str | None,
) -> str:
    """Refuse a classification run that is neither one new task (both folders) nor
    ``--episodes N``; the episode kind, defaulted (both with --data, across without)."""
    folders = support is not None or query is not None
    if folders and opts.episodes is not None:
        raise UsageError("give either --support and --query, or --episodes N, not both")
    if folders and (support is None or query is None):
        raise UsageError("a new task needs both --support DIR and --query DIR")
    if not folders and opts.episodes is None:
        raise UsageError("give --support DIR --query DIR, or --episodes N to evaluate")
    if episode_kind is None:
        episode_kind = "both" if data else "across"
    if episode_kind not in ("across", "within", "both"):
        raise UsageError(f"invalid --episode-kind {episode_kind!r}: give across, within or both")
    return episode_kind


def _run_glyphs(
    checkpoint: Path | None,
    opts: AdaptCommandConfig,
    support: Path | None,
    query: Path | None,
    data: list[Path],
    episode_kind: str,
    baseline: Path | None,
    common: Any,
) -> tuple[list[str], int]:
    """Load the meta-model, then adapt it to the folders' task or evaluate it on episodes;
    what did not converge (:func:`_readout_items`) and the read-out solve's budget."""
    import torch

    from jiio_cli.tasks.fewshot.loading import checked_query_settings, load_meta_model

    torch.manual_seed(common.seed)
    model, path, spec = load_meta_model(checkpoint, common.torch_device)
    settings = checked_query_settings(model, path, _settings(spec, opts))
    budget = settings.forward.max_iter
    if support is not None and query is not None:
        return _adapt_folders(model, path, settings, support, query, common.json_output), budget
    base = None
    if baseline is not None:
        from jiio_cli.tasks.fewshot.loading import load_protonet

        base = load_protonet(baseline, common.torch_device)
    return _evaluate(model, path, settings, opts, data, episode_kind, base, common), budget


def _settings(spec: Any, opts: AdaptCommandConfig) -> Any:
    """A classification meta-model's settings: the shared options, β and the read-out's
    soft k-means steps (None keeps the model's own)."""
    import dataclasses

    from jiio_cli.tasks.fewshot.training import adapt_settings

    return dataclasses.replace(
        _with_options(adapt_settings(spec, iterations=opts.iterations), opts),
        transductive_weight=opts.transductive_weight,
        soft_kmeans_steps=opts.soft_kmeans_steps,
    )


def _with_options(settings: Any, opts: AdaptCommandConfig) -> Any:
    """Adaptation settings (glyph or sinusoid) whose naive loop uses Adam's rate
    ``--naive-lr`` and whose read-out solve has the budget ``--forward-iterations``."""
    import dataclasses

    forward = settings.forward
    if opts.forward_iterations is not None:
        forward = dataclasses.replace(forward, max_iter=opts.forward_iterations)
    naive = dataclasses.replace(settings.naive, lr=opts.naive_lr)
    return dataclasses.replace(settings, naive=naive, forward=forward)


def _readout_items(report: dict[str, Any], what: str) -> list[str]:
    """The rule's item for an evaluation ``report`` whose read-out solves ended above
    tolerance on some tasks: ``3 episodes across alphabets (0.5%)``; none otherwise."""
    count, total = report["readout_unconverged"], report["episodes"]
    return [f"{count} {what} ({100 * count / total:.1f}%)"] if count else []


def _adapt_folders(
    model: Any, path: Path, settings: Any, support: Path, query: Path, json_output: bool
) -> list[str]:
    """Adapt to the folders' task, print its predictions; the read-out solve, named, when
    it ended above tolerance."""
    import torch

    from jiio_cli.tasks.fewshot.classification import (
        task_soft_kmeans_steps,
        task_transductive_weight,
    )
    from jiio_cli.tasks.fewshot.evaluation import adapt_and_predict

    pool, images, files, names = _folders_task(model, path, support, query)
    device = next(model.parameters()).device
    s_images = torch.cat(pool.images).to(device)
    s_labels = torch.cat(
        [torch.full((x.shape[0],), k, dtype=torch.long) for k, x in enumerate(pool.images)]
    ).to(device)
    started = time.perf_counter()
    predicted, probs, result, readout = adapt_and_predict(
        model, s_images, s_labels, images.to(device), pool.num_classes, settings
    )
    seconds = time.perf_counter() - started
    rows = []
    for i, file in enumerate(files):
        row: dict[str, Any] = {
            "file": str(file.relative_to(query)),
            "predicted": pool.names[int(predicted[i])],
            "probability": float(probs[i, predicted[i]]),
        }
        if names is not None:
            row["label"] = names[i]
            row["correct"] = row["predicted"] == names[i]
        rows.append(row)
    document: dict[str, Any] = {
        "checkpoint": str(path),
        "classes": list(pool.names),
        "support_images": int(s_images.shape[0]),
        "predictions": rows,
        "accuracy": (sum(r["correct"] for r in rows) / len(rows)) if names is not None else None,
        "support_objective": float(result.objective[0]),
        "iterations": int(result.iterations[0]),
        "converged": readout <= settings.forward.tol,
        "readout": {
            "residual": readout,
            "tol": settings.forward.tol,
            "max_iter": settings.forward.max_iter,
        },
        "context_fit": _context_fit(result),
        "transductive_weight": task_transductive_weight(model, settings),
        "soft_kmeans_steps": task_soft_kmeans_steps(model, settings),
        "seconds": seconds,
    }
    unconverged = [] if document["converged"] else [_readout_item(readout, settings.forward.tol)]
    if json_output:
        emit(document, json_output=True)
        return unconverged
    print_table(rows, title=f"jiio adapt: {len(rows)} queries, {pool.num_classes} classes")
    fit = document["context_fit"]
    summary = (
        f"support objective {document['support_objective']:.4g} after "
        f"{document['iterations']} JIIO iterations (residuals z {fit['residual_z']:.1e}, "
        f"x {fit['residual_x']:.1e}); read-out residual {readout:.1e} "
        f"(tolerance {settings.forward.tol:g}), {seconds:.2f} s"
    )
    if document["accuracy"] is not None:
        summary = f"accuracy {document['accuracy']:.3f}; " + summary
    typer.echo(summary)
    return unconverged


def _folders_task(model: Any, path: Path, support: Path, query: Path) -> tuple[Any, ...]:
    """The support classes (a pool), the query images, their files and their class names
    (None without class subfolders), checked against what the model serves."""
    from jiio_cli.data.episodes import load_class_folders, load_query_folder

    size, most = model.config.image_size, model.config.ways
    preprocess = model.config.preprocess
    pool = load_class_folders(support, size, "support", preprocess=preprocess)
    if pool.num_classes < 2:
        raise UsageError(f"support folder {support} has one class; give at least two")
    if pool.num_classes > most:
        raise UsageError(
            f"support folder {support} has {pool.num_classes} classes but the model "
            f"{path} serves at most {most} ways"
        )
    images, files, names = load_query_folder(query, size, preprocess)
    if names is not None:
        unknown = sorted(set(names) - set(pool.names))
        if unknown:
            raise UsageError(
                f"query class folder {unknown[0]!r} is not a support class "
                f"({', '.join(pool.names)})"
            )
    return pool, images, files, names


def _context_fit(result: Any) -> dict[str, Any]:
    """The context fit of one task (row 0 of ``result``), for the user to see: an inner
    optimisation stopped at its budget, not part of the converged verdict."""
    return {
        "objective": float(result.objective[0]),
        "iterations": int(result.iterations[0]),
        "residual_z": float(result.residual_z[0]),
        "residual_x": float(result.residual_x[0]),
        "residual_mu": float(result.residual_mu[0]),
        "reached_tol": bool(result.converged[0]),
    }


def _readout_item(residual: float, tol: float) -> str:
    """The rule's item for one task's read-out solve."""
    return f"the read-out solve (residual {residual:.1e} above {tol:g})"


def _evaluation_pool(data: list[Path], size: int, preprocess: str) -> tuple[Any, str]:
    """The held-out classes: the glyph meta-test alphabets, or the Omniglot ``data``'s
    held-out alphabets when present (all of them otherwise, e.g. a user's own folder)."""
    from jiio_cli.data.episodes import load_glyph_pool, load_omniglot_folder
    from jiio_cli.data.omniglot import HELD_OUT_ALPHABETS

    if not data:
        return (
            load_glyph_pool("test").resized(size),
            "glyph meta-test alphabets (sample_data/glyphs.npz)",
        )
    pool = load_omniglot_folder(data, size, preprocess)
    names = ", ".join(str(p) for p in data)
    held = [c for c, a in enumerate(pool.alphabets) if a in HELD_OUT_ALPHABETS]
    if held:
        return pool.select(held), f"{names}: held-out alphabets {', '.join(HELD_OUT_ALPHABETS)}"
    return pool, names


def _evaluate(
    model: Any,
    path: Path,
    settings: Any,
    opts: AdaptCommandConfig,
    data: list[Path],
    episode_kind: str,
    baseline: Any,
    common: Any,
) -> list[str]:
    """Evaluate on held-out episodes of each kind and print the reports; the kinds whose
    read-out solves ended above tolerance on some episodes (count and share)."""
    from jiio_cli.data.episodes import check_episode_shape, within_alphabet_groups
    from jiio_cli.tasks.fewshot.evaluation import evaluate_episodes

    size, most = model.config.image_size, model.config.ways
    if baseline is not None and (
        baseline.config.image_size != size or baseline.config.preprocess != model.config.preprocess
    ):
        raise UsageError(
            "--baseline sees its images at another size or preprocessing than the "
            "meta-model; compare models trained with the same --image-size and --preprocess"
        )
    pool, source = _evaluation_pool(data, size, model.config.preprocess)
    check_episode_shape(pool, opts.ways, opts.shots, opts.queries, source)
    if opts.ways > most:
        raise UsageError(f"--ways {opts.ways}: the model {path} serves at most {most} ways")
    kinds = ["across", "within"] if episode_kind == "both" else [episode_kind]
    if not within_alphabet_groups(pool, opts.ways, opts.shots + opts.queries):
        if episode_kind == "within":
            raise UsageError(
                f"no alphabet of {source} has {opts.ways} classes: within-alphabet "
                f"{opts.ways}-way episodes are impossible; use fewer --ways"
            )
        if episode_kind == "both":
            typer.echo(
                f"note: no alphabet has {opts.ways} classes; within-alphabet episodes skipped",
                err=True,
            )
            kinds = ["across"]
    runs = [
        (
            _episode_header(path, baseline, source, kind, opts, common),
            partial(
                evaluate_episodes,
                model,
                pool,
                ways=opts.ways,
                kind=kind,
                baseline=baseline,
                **_evaluation_arguments(opts, settings, common.seed),
            ),
        )
        for kind in kinds
    ]
    documents = _run_evaluations(runs, opts, common.json_output, _print_episode_report)
    unconverged = [
        item
        for document in documents
        for item in _readout_items(document, f"episodes {_KIND_WORDS[document['episode_kind']]}")
    ]
    if common.json_output:
        emit(_episodes_json(documents), json_output=True)
        return unconverged
    for document in documents:
        _print_episode_report(document, opts)
    return unconverged


def _episode_header(
    path: Path, baseline: Any, source: str, kind: str, opts: AdaptCommandConfig, common: Any
) -> dict[str, Any]:
    """What a glyph evaluation's document says before its report: the models, the data,
    the episodes and where it ran."""
    return {
        "checkpoint": str(path),
        "baseline": None if baseline is None else "protonet",
        "data": source,
        "episode_kind": kind,
        "ways": opts.ways,
        "shots": opts.shots,
        "queries": opts.queries,
        "jiio_iterations": opts.iterations,
        "device": str(common.torch_device),
        "seed": common.seed,
    }


def _episodes_json(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The one JSON document of a glyph evaluation: its report, or ``{"reports": [...]}``
    for several kinds of episodes (``complete`` when every one is)."""
    if len(documents) == 1:
        return documents[0]
    return {"reports": documents, "complete": all(d["complete"] for d in documents)}


def _run_evaluations(
    runs: list[tuple[dict[str, Any], Callable[..., dict[str, Any]]]],
    opts: AdaptCommandConfig,
    json_output: bool,
    show: Callable[[dict[str, Any], AdaptCommandConfig], None],
) -> list[dict[str, Any]]:
    """Run each ``(header, evaluate)`` under one progress display; the documents (header
    and report, ``complete``).

    On Ctrl-C the finished documents and the one under way, over its finished batches and
    marked partial, are printed (``show`` for each in a table, or the one JSON document),
    and the interrupt goes on to the boundary, which exits 130.
    """
    assert opts.episodes is not None
    documents: list[dict[str, Any]] = []
    batches = [
        FinishedBatches[dict[str, Any]](opts.episodes, opts.batch_size, "episodes") for _ in runs
    ]
    try:
        with progress_display() as display:
            for (header, evaluate), finished in zip(runs, batches, strict=True):
                report = evaluate(
                    progress=display.update,
                    on_batch=lambda done, into=finished: into.record(done, done["episodes"]),
                )
                documents.append({**header, **report, "complete": True})
    except KeyboardInterrupt:
        under_way: tuple[dict[str, Any], str] | None = None
        if len(documents) < len(runs):
            finished = batches[len(documents)]
            report = finished.result or {"episodes": 0}
            under_way = (
                {**runs[len(documents)][0], **report, **finished.as_json()},
                finished.note(),
            )
        _print_partial(documents, under_way, opts, json_output, show)
        raise
    return documents


def _print_partial(
    documents: list[dict[str, Any]],
    under_way: tuple[dict[str, Any], str] | None,
    opts: AdaptCommandConfig,
    json_output: bool,
    show: Callable[[dict[str, Any], AdaptCommandConfig], None],
) -> None:
    """The finished ``documents`` and the interrupted one (``under_way``: its document
    and the partial note, if any; a table only when some of its batches finished)."""
    shown = documents if under_way is None else [*documents, under_way[0]]
    if json_output:
        emit(_episodes_json(shown), json_output=True)
        return
    for document in shown:
        if document["episodes"]:
            show(document, opts)
    if under_way is not None:
        typer.echo(under_way[1])


def _evaluation_arguments(opts: AdaptCommandConfig, settings: Any, seed: int) -> dict[str, Any]:
    """What both evaluations (glyph episodes, sinusoid tasks) take from the options: the
    shots and queries per task, how many tasks and how many at once, the adaptation
    settings, the naive loop's steps and the seed of the tasks."""
    return {
        "shots": opts.shots,
        "queries": opts.queries,
        "episodes": opts.episodes,
        "settings": settings,
        "seed": seed,
        "batch": opts.batch_size,
        "naive_steps": opts.naive_steps,
    }


def _print_episode_report(document: dict[str, Any], opts: AdaptCommandConfig) -> None:
    """One kind of episodes' table, paired differences and residuals."""
    steps = document.get("soft_kmeans_steps", 0)
    # Every meta-model method shares the read-out, and so its soft k-means steps.
    refined = f", then {steps} soft k-means steps" if steps else ""
    labels = {
        "jiio": f"jiio ({opts.iterations} iterations{refined})",
        "naive": f"naive Adam ({', '.join(map(str, document['naive_steps']))} steps{refined})",
        "centroid": f"no adaptation (feature centroids{refined})",
    }
    if "protonet" in document:
        labels["protonet"] = "Prototypical Network (--baseline)"
    if "protonet_soft_kmeans" in document:
        yard = document["protonet_soft_kmeans_steps"]
        labels["protonet_soft_kmeans"] = f"Prototypical Network, {yard} soft k-means steps"
    kind = _KIND_WORDS[document["episode_kind"]]
    _print_comparison(
        document,
        labels,
        ("accuracy", lambda r: f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} %"),
        lambda d: f"{100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f} points",
        title=f"jiio adapt: {document['episodes']} episodes {kind}, "
        f"{opts.ways}-way {opts.shots}-shot, {opts.queries} queries per class ({document['data']})",
    )
    res = document["residuals"]
    typer.echo(
        "relative fixed-point residuals (mean / max): support z "
        f"{res['support_z']['mean']:.1e} / {res['support_z']['max']:.1e}, query z "
        f"{res['query_z']['mean']:.1e} / {res['query_z']['max']:.1e}"
        f"{_above_tol(document)}"
    )


def _above_tol(report: dict[str, Any]) -> str:
    """``; 3 of 600 read-out solves above tolerance 1e-4`` (nothing when there are none)."""
    count = report["readout_unconverged"]
    if not count:
        return ""
    return (
        f"; {count} of {report['episodes']} read-out solves above tolerance "
        f"{report['readout_tol']:g}"
    )


def _print_comparison(
    report: dict[str, Any],
    labels: dict[str, str],
    metric: tuple[str, Callable[[dict[str, Any]], str]],
    difference: Callable[[dict[str, float]], str],
    title: str,
) -> None:
    """The methods' table, then JIIO's paired differences to the others (same episodes)."""
    name, show = metric
    rows = [
        {
            "method": label,
            name: show(report[method]),
            "support objective": report[method].get("support_objective", ""),
            "s / task": report[method]["seconds_per_task"],
            "f-evals / task": report[method].get("f_evals_per_task", ""),
            "VJPs / task": report[method].get("vjps_per_task", ""),
        }
        for method, label in labels.items()
    ]
    print_table(rows, title=f"{title} (± is the 95 % interval)")
    parts = [
        f"{key.removeprefix('jiio_minus_').replace('_', ' ')}: {difference(d)}"
        for key, d in report["paired"].items()
    ]
    typer.echo("JIIO minus, paired per episode: " + "; ".join(parts))


def _evaluate_sinusoid(
    checkpoint: Path | None, opts: AdaptCommandConfig, misfits: set[str], common: Any
) -> tuple[list[str], int]:
    """``--dataset sinusoid --episodes N``: JIIO, naive Adam and no adaptation, by query MSE;
    the tasks whose read-out solve ended above tolerance (count and share) and that
    solve's budget."""
    if misfits:
        name = sorted(misfits)[0]
        raise UsageError(
            f"--{name} does not apply to --dataset sinusoid (regression tasks are drawn, "
            "not read, and have no classes); remove it"
        )
    if opts.episodes is None:
        raise UsageError("--dataset sinusoid evaluates on fresh tasks: give --episodes N")
    import torch

    from jiio_cli.tasks.fewshot.sinusoid_eval import evaluate_tasks
    from jiio_cli.tasks.fewshot.sinusoid_training import adapt_settings, load_sinusoid_model

    torch.manual_seed(common.seed)
    model, path, spec = load_sinusoid_model(checkpoint, common.torch_device)
    iterations = opts.iterations if opts.iterations is not None else spec.inner_iters
    settings = _with_options(adapt_settings(spec, iterations=iterations), opts)
    header = {
        "checkpoint": str(path),
        "dataset": "sinusoid",
        "shots": opts.shots,
        "queries": opts.queries,
        "jiio_iterations": iterations,
        "naive_lr": opts.naive_lr,
        "device": str(common.torch_device),
        "seed": common.seed,
    }
    evaluate = partial(evaluate_tasks, model, **_evaluation_arguments(opts, settings, common.seed))
    (document,) = _run_evaluations(
        [(header, evaluate)], opts, common.json_output, _print_sinusoid_report
    )
    verdict = _readout_items(document, "sinusoid tasks"), settings.forward.max_iter
    if common.json_output:
        emit(document, json_output=True)
    else:
        _print_sinusoid_report(document, opts)
    return verdict


def _print_sinusoid_report(document: dict[str, Any], opts: AdaptCommandConfig) -> None:
    """The sinusoid tasks' table, paired differences and read-out residuals."""
    labels = {
        "jiio": f"jiio ({document['jiio_iterations']} iterations)",
        "naive": f"naive Adam ({', '.join(map(str, document['naive_steps']))} steps, "
        f"lr {opts.naive_lr:g})",
        "no_adaptation": "no adaptation (v = 0)",
    }
    _print_comparison(
        document,
        labels,
        # Significant digits: a good model's MSE is far below 10⁻³.
        ("query MSE", lambda r: f"{r['mse']:.3g} ± {r['ci95']:.2g}"),
        lambda d: f"{d['mean']:+.3g} ± {d['ci95']:.2g}",
        title=f"jiio adapt: {document['episodes']} sinusoid tasks, {opts.shots}-shot, "
        f"{opts.queries} query points per task",
    )
    res = document["residuals"]["query_z"]
    typer.echo(
        f"relative fixed-point residuals of the read-out (mean / max): {res['mean']:.1e} / "
        f"{res['max']:.1e}{_above_tol(document)}"
    )
