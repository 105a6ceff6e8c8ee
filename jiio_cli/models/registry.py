"""Build a model from its kind and a plain config dict (the form stored in checkpoints)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from .classifier import DEQClassifier
from .config import ModelConfig
from .decoder import DEQDecoder
from .meta import FiLMClassifier
from .protonet import ProtoNet
from .regressor import FiLMRegressor

__all__ = ["MODEL_KINDS", "build_model", "config_from_dict"]

MODEL_KINDS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {
        DEQDecoder.kind: DEQDecoder,
        DEQClassifier.kind: DEQClassifier,
        FiLMClassifier.kind: FiLMClassifier,
        FiLMRegressor.kind: FiLMRegressor,
        ProtoNet.kind: ProtoNet,
    }
)


def _model_class(kind: str) -> Any:
    try:
        return MODEL_KINDS[kind]
    except (KeyError, TypeError):
        known = ", ".join(sorted(MODEL_KINDS))
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {known}") from None


def config_from_dict(kind: str, config_dict: Mapping[str, Any] | None = None) -> ModelConfig:
    """Validated config of a model kind; missing keys take their defaults.

    Raises:
        ValueError: for an unknown kind, an unknown key, or an invalid value.
    """
    config_class: type[ModelConfig] = _model_class(kind).config_class
    return config_class.from_dict({} if config_dict is None else config_dict)


def build_model(kind: str, config_dict: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a fresh (untrained) model of ``kind`` ("decoder", "classifier", "meta" or "regressor").

    Args:
        kind: the model kind, the ``kind`` class attribute of the model classes.
        config_dict: config fields as plain JSON types (``config.to_dict()``); missing
            keys take their defaults, unknown keys are an error.

    Raises:
        ValueError: for an unknown kind, an unknown key, or an invalid value.
    """
    return _model_class(kind)(config_from_dict(kind, config_dict))
