"""The MDEQ-style residual block shared by every DEQ cell in the zoo."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import check_groups, conv3x3

__all__ = ["ResidualBlock"]


class ResidualBlock(nn.Module):
    """Residual block of a multiscale DEQ (Bai et al. 2020), driven by an injection.

    With u the injection (already computed from the input x) and optional FiLM
    parameters (γ, β)::

        y   = GN₁(relu(conv₁(z)))
        y   = GN₂(conv₂(y) + u)
        y   = (1 + γ) ⊙ y + β                 (only when FiLM parameters are given)
        out = GN₃(relu(z + y))

    Every operation acts on one sample at a time (3×3 convs, GroupNorm, elementwise
    ops), so row b of the output depends only on row b of z, u, γ and β: the solvers
    may freeze converged rows without changing the others.

    The convs have no bias (a GroupNorm follows each) and start from N(0, 0.01²)
    weights, as in MDEQ. The z → out map then goes through conv₂ with gain ≈ 0.01·√(9C)
    before meeting u inside GN₂, which keeps the untrained cell a contraction in z.

    Args:
        channels: C, channels of z and of the injection.
        hidden_channels: channels between the two convs; defaults to C.
        groups: GroupNorm groups; must divide C and the hidden channels.
        weight_norm: weight-normalise both convs.

    Shapes:
        z, u: (N, C, H, W); γ, β: (N, C); out: (N, C, H, W).
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int | None = None,
        groups: int = 8,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        hidden = channels if hidden_channels is None else hidden_channels
        check_groups(channels, groups)
        check_groups(hidden, groups)
        self.channels = channels
        self.hidden_channels = hidden
        self.conv1 = conv3x3(channels, hidden, small_init=True, weight_norm=weight_norm)
        self.norm1 = nn.GroupNorm(groups, hidden)
        self.conv2 = conv3x3(hidden, channels, small_init=True, weight_norm=weight_norm)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.norm3 = nn.GroupNorm(groups, channels)

    def forward(
        self,
        z: Tensor,
        injection: Tensor,
        scale: Tensor | None = None,
        shift: Tensor | None = None,
    ) -> Tensor:
        """Apply the block.

        Args:
            z: state (N, C, H, W).
            injection: u, same shape as z.
            scale: γ of shape (N, C), or None for no modulation.
            shift: β of shape (N, C); required exactly when ``scale`` is given.

        Returns:
            The next state, (N, C, H, W).
        """
        if (scale is None) != (shift is None):
            raise ValueError("FiLM needs both scale and shift, or neither")
        y = self.norm1(F.relu(self.conv1(z)))
        y = self.norm2(self.conv2(y) + injection)
        if scale is not None and shift is not None:
            y = y * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.norm3(F.relu(z + y))
