"""Load trained models from checkpoints, validating their stored configuration."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from jiio_cli.checkpoint import Checkpoint, load_checkpoint, load_module_state, model_tensors
from jiio_cli.errors import JiioError
from jiio_cli.models import build_model

__all__ = ["DECODER_TASKS", "MODELS_DIR", "default_checkpoint", "load_decoder", "load_model"]

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

DECODER_TASKS = frozenset({"generate", "denoise", "inpaint"})
"""The training tasks whose checkpoints hold a DEQ decoder."""

_DEFAULTS = {
    "decoder": "mnist-decoder.safetensors",
    "classifier": "mnist-classifier.safetensors",
}


def default_checkpoint(kind: str) -> Path:
    """The shipped model for a kind of task, or a clear error if it is missing."""
    path = MODELS_DIR / _DEFAULTS[kind]
    if not path.exists():
        raise JiioError(f"the default model {path} is missing; pass --checkpoint PATH")
    return path


def load_model(
    path: Path, expected_tasks: set[str], kind: str, device: torch.device
) -> tuple[nn.Module, Checkpoint]:
    """Build the model a checkpoint describes and load its weights (eval mode).

    Raises:
        UsageError: the file is missing or holds another task's model.
        JiioError: the file is damaged or its config does not describe a valid model.
    """
    ckpt = load_checkpoint(path, expected_task=expected_tasks)
    if ckpt.model_kind != kind:
        raise JiioError(f"checkpoint {path} holds a {ckpt.model_kind!r} model, not a {kind!r}")
    try:
        model = build_model(kind, ckpt.model_config)
    except (ValueError, TypeError) as exc:
        raise JiioError(f"checkpoint {path} has an invalid model config: {exc}") from None
    load_module_state(model, model_tensors(ckpt.tensors))
    return model.to(device).eval(), ckpt


def load_decoder(path: Path | None, device: torch.device) -> tuple[nn.Module, Checkpoint]:
    """The DEQ decoder of a checkpoint of one of :data:`DECODER_TASKS`, or the shipped
    one when ``path`` is None (errors as :func:`load_model`)."""
    path = default_checkpoint("decoder") if path is None else path
    return load_model(path, set(DECODER_TASKS), "decoder", device)
