"""Load a meta-model and the settings it was trained with."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.errors import JiioError, UsageError
from jiio_cli.models import FiLMClassifier, MetaConfig, ProtoNet
from jiio_cli.tasks.fewshot.classification import (
    AdaptConfig,
    task_soft_kmeans_steps,
    task_transductive_weight,
)
from jiio_cli.tasks.fewshot.training import MetaTrainConfig
from jiio_cli.tasks.loading import MODELS_DIR, load_model
from jiio_cli.training import TrainConfig

__all__ = [
    "DEFAULT_META_MODEL",
    "checked_query_settings",
    "load_meta_model",
    "load_protonet",
    "meta_checkpoint",
    "spec_from_json",
]

DEFAULT_META_MODEL = MODELS_DIR / "meta-omniglot.safetensors"
"""The default for drawings: trained on real handwriting (Omniglot). The glyph models stay
available by name, e.g. ``-c models/meta-glyphs-affine.safetensors``."""


def spec_from_json(data: dict[str, Any] | None, model: MetaConfig) -> MetaTrainConfig:
    """Rebuild the training spec stored in a checkpoint; unknown or absent keys fall back
    to the defaults (the adaptation settings are what matter after training)."""
    known = {f.name for f in dataclasses.fields(MetaTrainConfig)} - {"model", "loop"}
    values = {k: v for k, v in (data or {}).items() if k in known}
    for key in ("ways", "episode_kinds"):
        if key in values:
            values[key] = tuple(values[key])
    if isinstance(values.get("data"), str):  # one path, as older checkpoints store it
        values["data"] = (values["data"],)
    elif values.get("data") is not None:
        values["data"] = tuple(values["data"])
    return MetaTrainConfig(model=model, loop=TrainConfig(), **values)


def meta_checkpoint(path: Path | None, default: Path, what: str) -> tuple[Path, str]:
    """The meta-training checkpoint to load (``path``, or the shipped ``default``, a
    ``what`` such as "meta-model") and the kind of model it holds.

    Raises:
        JiioError: the default is missing, or the file is damaged.
        UsageError: the file is missing or holds another task's checkpoint.
    """
    if path is None:
        path = default
        if not path.exists():
            raise JiioError(f"the default {what} {path} is missing; pass --checkpoint PATH")
    return path, load_checkpoint(path, expected_task={"meta"}).model_kind


def load_meta_model(
    path: Path | None, device: torch.device
) -> tuple[FiLMClassifier, Path, MetaTrainConfig]:
    """The meta-model at ``path`` (default: the shipped one), its path and its spec.

    Raises:
        JiioError: the default model is missing, or the file is damaged.
        UsageError: the file holds another task's model.
    """
    path, kind = meta_checkpoint(path, DEFAULT_META_MODEL, "meta-model")
    if kind == "regressor":
        raise UsageError(
            f"checkpoint {path} holds a sinusoid regressor, not a few-shot classifier; "
            "pass --dataset sinusoid"
        )
    if kind == "protonet":
        raise UsageError(
            f"checkpoint {path} holds a Prototypical Network (a baseline with nothing to "
            "adapt); pass it as --baseline and a meta-model as --checkpoint"
        )
    model, ckpt = load_model(path, {"meta"}, "meta", device)
    assert isinstance(model, FiLMClassifier)
    return model, path, spec_from_json(ckpt.training_config, model.config)


def load_protonet(path: Path, device: torch.device) -> ProtoNet:
    """The Prototypical Network baseline at ``path`` (eval mode).

    Raises:
        UsageError: the file is missing or holds another kind of model.
        JiioError: the file is damaged.
    """
    kind = load_checkpoint(path, expected_task={"meta"}).model_kind
    if kind != "protonet":
        raise UsageError(
            f"--baseline {path} holds a {kind!r} model, not a Prototypical Network "
            "(train one with jiio train --task meta --model protonet)"
        )
    model, _ = load_model(path, {"meta"}, "protonet", device)
    assert isinstance(model, ProtoNet)
    return model


def checked_query_settings(model: FiLMClassifier, path: Path, settings: AdaptConfig) -> AdaptConfig:
    """``settings``, once its β (``transductive_weight``) and read-out steps
    (``soft_kmeans_steps``) are known to suit the model (None: the model's own).

    Raises:
        UsageError: β > 0 or K > 0 for a model that classifies with its head (both need
            class centroids), naming the option that set it.
    """
    checks = (
        ("--transductive-weight", task_transductive_weight),
        ("--soft-kmeans-steps", task_soft_kmeans_steps),
    )
    for option, check in checks:
        try:
            check(model, settings)
        except ValueError as error:
            raise UsageError(f"{option}: {error}; {path} classifies with its head") from None
    return settings
