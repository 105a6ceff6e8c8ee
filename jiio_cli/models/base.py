"""What every DEQ model here shares: its config, its cell, and the cell's initial state."""

from __future__ import annotations

from typing import Any, ClassVar

from .config import ModelConfig
from .zero_state import ZeroStateModule

__all__ = ["DEQModel"]


class DEQModel(ZeroStateModule):
    """Base of the models: a config of type ``config_class`` and a cell ``self.cell``.

    Subclasses call :meth:`_accept_config` first in ``__init__`` and then build
    ``self.cell`` (a :class:`~jiio_cli.models.zero_state.ZeroStateModule`, which provides
    ``state_shape`` and ``check_batch``) and ``self.head``; the model's
    :meth:`~jiio_cli.models.zero_state.ZeroStateModule.init_state` is the cell's zero
    state on the model's parameters' device and dtype.
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

    def check_batch(self, batch: int) -> None:
        """Raise ValueError when the cell cannot start ``batch`` rows."""
        self.cell.check_batch(batch)
