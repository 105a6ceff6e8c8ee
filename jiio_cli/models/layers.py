"""Small building blocks shared by the DEQ cells: 3×3 convolutions, initialisation, checks."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

__all__ = [
    "SMALL_INIT_STD",
    "bilinear_resize",
    "check_groups",
    "check_positive",
    "conv3x3",
    "has_weight_norm",
    "interpolation_matrix",
    "pair",
    "param_device_dtype",
]

# MDEQ's choice: with N(0, 0.01²) weights a 3×3 conv over C channels has gain
# ≈ 0.01·√(9C) ≪ 1, so the untrained cell barely depends on z and is a contraction.
SMALL_INIT_STD = 0.01


def check_positive(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive ``int`` (``bool`` rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_groups(channels: int, groups: int) -> None:
    """Raise ``ValueError`` unless ``groups`` divides ``channels``.

    GroupNorm needs it; checking here gives the user the two numbers at fault rather than
    PyTorch's message from deep inside a constructor.
    """
    check_positive("channels", channels)
    check_positive("groups", groups)
    if channels % groups != 0:
        raise ValueError(f"groups ({groups}) must divide channels ({channels})")


def injection_size(injection: nn.Module, channels: int, name: str) -> tuple[int, int]:
    """The spatial size (H, W) of an injection's output, checked against the cell.

    A cell's state has the shape (channels, H, W) of its injection's output, so the
    injection must produce ``channels`` channels and expose ``spatial_size``; ``name``
    is what messages call it (``injection``, ``image injection``).
    """
    inj_channels = getattr(injection, "channels", None)
    inj_size = getattr(injection, "spatial_size", None)
    if inj_channels != channels:
        raise ValueError(f"{name} produces {inj_channels} channels but the cell has {channels}")
    if inj_size is None:
        raise ValueError(f"{name} must expose spatial_size (H, W)")
    return inj_size


def pair(size: int | tuple[int, int], name: str = "size") -> tuple[int, int]:
    """Normalise an int or (H, W) pair to a validated (H, W) tuple of positive ints."""
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if not isinstance(hw, tuple | list) or len(hw) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {size!r}")
    check_positive(f"{name}[0]", hw[0])
    check_positive(f"{name}[1]", hw[1])
    return int(hw[0]), int(hw[1])


def conv3x3(
    in_channels: int,
    out_channels: int,
    *,
    stride: int = 1,
    bias: bool = False,
    small_init: bool = False,
    weight_norm: bool = False,
) -> nn.Conv2d:
    """3×3 convolution with padding 1: (B, C_in, H, W) → (B, C_out, ⌈H/s⌉, ⌈W/s⌉).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        stride: s, 1 or 2.
        bias: add a learnt bias. Off inside residual blocks, where a GroupNorm follows
            and would cancel a per-channel constant anyway.
        small_init: draw weights from N(0, ``SMALL_INIT_STD``²) instead of PyTorch's
            Kaiming-uniform default.
        weight_norm: reparametrise ``weight = g · v / ‖v‖`` (per output channel) with
            ``torch.nn.utils.parametrizations.weight_norm``. Applied after the
            initialisation, so g starts at ‖v‖ and the initial weight is unchanged.
    """
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
    if small_init:
        nn.init.normal_(conv.weight, mean=0.0, std=SMALL_INIT_STD)
    if conv.bias is not None and small_init:
        nn.init.zeros_(conv.bias)
    if weight_norm:
        conv = _weight_norm(conv, name="weight", dim=0)
    return conv


def has_weight_norm(module: nn.Module) -> bool:
    """True when ``module.weight`` is produced by a weight-norm parametrisation."""
    parametrizations = getattr(module, "parametrizations", None)
    return parametrizations is not None and "weight" in parametrizations


def param_device_dtype(
    module: nn.Module,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> tuple[torch.device | str, torch.dtype]:
    """Fill a missing device or dtype from the module's first parameter."""
    param = next(module.parameters(), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    if dtype is None:
        dtype = param.dtype if param is not None else torch.get_default_dtype()
    return device, dtype


@functools.lru_cache(maxsize=64)
def interpolation_matrix(
    size_in: int, size_out: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """The (size_out, size_in) matrix U of 1-D linear interpolation (align_corners=False).

    Bilinear resizing is separable: ``F.interpolate(z, (H, W), mode="bilinear")`` equals
    U_H z U_Wᵀ per channel. U is read off by interpolating the identity, so it follows
    PyTorch's own source-index rule (edge clamping included). Cached per size, device
    and dtype; callers must not modify it.
    """
    # A normal tensor even if first asked for under inference mode, so autograd can
    # save it later.
    with torch.inference_mode(False), torch.no_grad():
        eye = torch.eye(size_in, device=device, dtype=dtype).unsqueeze(0)
        return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T


def bilinear_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as U_H x U_Wᵀ.

    The same function (up to rounding) for x (…, h, w) → (…, H, W); two small matrix
    products are several times cheaper than the interpolation kernel and its backward
    on the CPU for the small grids the models resize.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    u_h = interpolation_matrix(h, size[0], x.device, x.dtype)
    u_w = interpolation_matrix(w, size[1], x.device, x.dtype)
    return u_h @ x @ u_w.T
