"""Fixed points at given contexts: the query-side solve shared by the few-shot tasks.

Both meta-models (the glyph :class:`~jiio_cli.models.FiLMClassifier` and the sinusoid
:class:`~jiio_cli.models.FiLMRegressor`) condition their DEQ cell on a per-task context
v ∈ ℝᴰ: bound to a batch of inputs, the cell is f(z, v), and a query's state is its fixed
point z* = f(z*, v*) at the adapted context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from jiio_cli.engine import ForwardSolution, SolverConfig, forward_solve

__all__ = ["ContextModel", "solve_at_contexts"]


class ContextModel(Protocol):
    """A context-conditioned DEQ: bind inputs, get the cell f(z, v), unbind."""

    def bind(self, inputs: Tensor) -> Any: ...
    def unbind(self) -> None: ...
    def context_cell(self) -> Callable[[Tensor, Tensor], Tensor]: ...
    def init_state(self, batch: int) -> Tensor: ...


def solve_at_contexts(
    model: ContextModel, inputs: Tensor, context: Tensor, solver: SolverConfig
) -> ForwardSolution:
    """The forward solve, without autograd, of the fixed points of ``inputs`` (B, m, ...)
    at the contexts (B, D): states z* (B, m, ...) and the solver's per-task residuals."""
    with torch.no_grad():
        model.bind(inputs)
        try:
            cell = model.context_cell()
            return forward_solve(cell, context, model.init_state(inputs.shape[0]), solver)
        finally:
            model.unbind()
