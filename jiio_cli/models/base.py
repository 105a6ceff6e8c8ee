"""What every DEQ model here shares: its config, its cell, and the cell's initial state."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .config import ModelConfig

__all__ = ["DEQModel"]


class DEQModel(nn.Module):
    """Base of the models: a config of type ``config_class`` and a cell ``self.cell``.

    Subclasses call :meth:`_accept_config` first in ``__init__`` and then build
    ``self.cell`` (which provides ``state_shape`` and ``init_state``) and ``self.head``.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    cell: Any

    def _accept_config(self, config: ModelConfig | None) -> Any:
        """Store ``config`` (default: the config class's defaults) after a type check."""
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"expected a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        return config

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the DEQ state z."""
        return self.cell.state_shape

    def init_state(
        self,
        batch: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Zero initial state (B, *state_shape); device/dtype default to the parameters'."""
        return self.cell.init_state(batch, device, dtype)
