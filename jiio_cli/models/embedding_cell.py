"""A FiLM-conditioned DEQ refinement of image embeddings, contractive by construction.

The images of a task are embedded once (e.g. by a
:class:`~jiio_cli.models.conv4.Conv4Encoder`); the DEQ state is a refined embedding
z ∈ ℝᴱ per image, the fixed point of

    f(z, v; e) = e + W̄ₒ tanh( W̄ᵢ z + (1 + γ) ⊙ (A e + a) + β ),   [γ, β] = F v

with W̄ᵢ = Wᵢ · min(1, ρ/‖Wᵢ‖₂) (H × E), W̄ₒ = Wₒ · min(1, 1/‖Wₒ‖₂) (E × H) and F a
bias-free linear map ℝᴰ → ℝ²ᴴ. Since |tanh'| ≤ 1, ‖∂f/∂z‖₂ ≤ ‖W̄ₒ‖₂‖W̄ᵢ‖₂ ≤ ρ < 1 for
every image, context and parameter value: the fixed point exists, is unique and the
solvers converge linearly. v = 0 is the unmodulated refinement; Wₒ starts small, so an
untrained model's z* is close to e (a Prototypical Network's embedding).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .film_base import FiLMCell
from .layers import check_positive

__all__ = ["EMBEDDING_CONTRACTION", "FiLMEmbeddingCell"]

EMBEDDING_CONTRACTION = 0.9
"""ρ, the bound on ‖∂f/∂z‖₂."""


def _bounded(weight: Tensor, bound: float) -> Tensor:
    """weight · min(1, bound/‖weight‖₂), differentiable (‖·‖₂ by SVD)."""
    norm = torch.linalg.matrix_norm(weight, ord=2)
    return weight * (bound / norm).clamp(max=1.0)


class FiLMEmbeddingCell(FiLMCell):
    """See the module docstring. Shapes per task row: e and z (B, n, E), v (B, D).

    Args:
        embedding_dim: E.
        hidden: H.
        context_dim: D.
        film_init_scale: F starts as N(0, (s/√D)²).
        output_init_scale: Wₒ starts as N(0, (s/√H)²), a small refinement.
    """

    def __init__(
        self,
        embedding_dim: int,
        hidden: int,
        context_dim: int,
        film_init_scale: float = 0.5,
        output_init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive("embedding_dim", embedding_dim)
        check_positive("hidden", hidden)
        self.embedding_dim = embedding_dim
        self.hidden = hidden
        self.drive = nn.Linear(embedding_dim, hidden)
        self.recurrent = nn.Linear(embedding_dim, hidden, bias=False)
        self.output = nn.Linear(hidden, embedding_dim, bias=False)
        nn.init.normal_(self.output.weight, std=output_init_scale / math.sqrt(hidden))
        self._init_film(context_dim, hidden, film_init_scale)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Per-row shape of z: (n, E) while embeddings are bound, (E,) otherwise."""
        if self._bound is None:
            return (self.embedding_dim,)
        return tuple(self._bound[0].shape[1:])

    @property
    def _data_name(self) -> str:
        return "embeddings"

    def bound_weights(self) -> tuple[Tensor, Tensor]:
        """(W̄ᵢ (H × E), W̄ₒ (E × H)): the recurrent and output weights after their bounds."""
        return (
            _bounded(self.recurrent.weight, EMBEDDING_CONTRACTION),
            _bounded(self.output.weight, 1.0),
        )

    def bind(self, embeddings: Tensor) -> FiLMEmbeddingCell:
        """Store the embeddings (B, n, E), their drive A e + a and the bounded weights.

        The stored tensors keep their autograd graph (the outer loss trains the encoder
        and the cell); bind again after every parameter update.
        """
        if embeddings.ndim != 3 or embeddings.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"bind expects embeddings (B, n, {self.embedding_dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        self._bound = (embeddings, self.drive(embeddings), *self.bound_weights())
        return self

    def apply_with(  # type: ignore[override]
        self, e: Tensor, u: Tensor, w_in: Tensor, w_out: Tensor, z: Tensor, v: Tensor
    ) -> Tensor:
        """f(z, v) for embeddings e (B, n, E) with drive u (B, n, H)."""
        self._check_rows(e, z, v)
        scale, shift = self.modulation(v)
        hidden = (z @ w_in.T + (1 + scale[:, None]) * u + shift[:, None]).tanh()
        return e + hidden @ w_out.T
