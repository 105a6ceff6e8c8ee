"""DEQ model zoo: cells f(z, x), injections, read-out heads and the task models.

Every cell has ``forward(z, x) -> z⁺`` with z of shape (B, *state_shape), a
``state_shape`` attribute and ``init_state(batch, device, dtype)``; every operation is
per sample (GroupNorm, never BatchNorm), so solvers may freeze converged rows.
"""

from .block import ResidualBlock
from .cell import ConvDEQCell
from .classifier import ClassifierConfig, DEQClassifier
from .config import ModelConfig
from .decoder import DecoderConfig, DEQDecoder
from .film import FiLMConvDEQCell
from .heads import ClassifierHead, ImageHead
from .injection import ImageInjection, LatentInjection
from .meta import FiLMClassifier, MetaConfig
from .protonet import ProtoNet, ProtoNetConfig
from .registry import MODEL_KINDS, build_model, config_from_dict
from .regressor import FiLMMLPDEQCell, FiLMRegressor, RegressorConfig

__all__ = [
    "MODEL_KINDS",
    "ClassifierConfig",
    "ClassifierHead",
    "ConvDEQCell",
    "DEQClassifier",
    "DEQDecoder",
    "DecoderConfig",
    "FiLMClassifier",
    "FiLMConvDEQCell",
    "FiLMMLPDEQCell",
    "FiLMRegressor",
    "ImageHead",
    "ImageInjection",
    "LatentInjection",
    "MetaConfig",
    "ModelConfig",
    "ProtoNet",
    "ProtoNetConfig",
    "RegressorConfig",
    "ResidualBlock",
    "build_model",
    "config_from_dict",
]
