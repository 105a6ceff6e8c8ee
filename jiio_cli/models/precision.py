"""Mixed precision for a DEQ cell: low-precision arithmetic inside f, float32 everywhere else.

``autocast_cell(cell, "bf16", device)`` returns a cell g with

    g(z, x) = cast_{dtype(z)}( f(z, x) evaluated under torch.autocast(bf16 or fp16) ),

so convolutions and matrix products of f run in bfloat16 / float16 while everything the
solvers keep — the state z, the adjoint μ, the input x, Anderson's history and Gram
matrix — stays in the solver's dtype (float32). Backpropagating through g gives float32
gradients for float32 parameters; the vector-Jacobian products inside f run in the low
precision like its forward pass. float16 gradients can underflow: the training loop
scales the loss for ``fp16`` (``torch.amp.GradScaler``); bfloat16 has float32's range
and needs no scaling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor

from jiio_cli.engine.problem import Cell, fixed_input_map
from jiio_cli.errors import UsageError

__all__ = [
    "PRECISIONS",
    "AutocastCell",
    "Precision",
    "autocast_cell",
    "check_precision",
    "use_strict_fp32",
]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def use_strict_fp32() -> None:
    """Make float32 on CUDA mean IEEE float32: no TF32 in cuDNN convolutions or matmuls.

    PyTorch runs cuDNN convolutions in TF32 (10-bit mantissa) by default on Ampere and
    later GPUs. Its relative error of about 1e-3 in every evaluation of f puts DEQ
    residuals below about 1e-4 out of reach, so solves that converge on the CPU would stop
    converging on a GPU (measured: 70 % of the classifier's fresh solves at tolerance
    1e-5 on an H100). Lower precision is opt-in, per cell, through ``--precision``. The
    command line calls this once per process; the engine itself never changes global state.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:  # PyTorch before the per-backend precision settings
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a one-line UsageError unless ``precision`` can run on ``device``."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: expected fp32, bf16 or fp16")
    if precision == "fp32":
        return
    dtype = _DTYPES[precision]
    probe = torch.ones(2, 2, device=device)
    try:
        with torch.autocast(device.type, dtype=dtype):
            out = probe @ probe
    except (RuntimeError, ValueError) as exc:
        raise UsageError(
            f"--precision {precision} is not supported on {device} by this PyTorch build "
            f"({exc}); use --precision fp32"
        ) from None
    if out.dtype != dtype:
        raise UsageError(
            f"--precision {precision} is not supported on {device} by this PyTorch build "
            f"(autocast computed in {out.dtype}); use --precision fp32"
        )


class AutocastCell:
    """A DEQ cell evaluated under autocast, returning its result in z's dtype."""

    def __init__(self, cell: Cell, dtype: torch.dtype, device_type: str) -> None:
        self.cell = cell
        self.dtype = dtype
        self.device_type = device_type

    def __call__(self, z: Tensor, x: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.cell(z, x)
        # The solvers mix and compare states across iterations: keep them in one dtype.
        return out.to(z.dtype)

    def with_fixed_input(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """z ↦ f(z, x) under autocast, the injection computed once if the cell can."""
        with torch.autocast(self.device_type, dtype=self.dtype):
            inner = fixed_input_map(self.cell, x)

        def step(z: Tensor) -> Tensor:
            with torch.autocast(self.device_type, dtype=self.dtype):
                out = inner(z)
            return out.to(z.dtype)

        return step


def autocast_cell(cell: Cell, precision: Precision, device: torch.device) -> Cell:
    """``cell`` itself for ``fp32``, else an :class:`AutocastCell` in bf16 / fp16."""
    if precision == "fp32":
        return cell
    return AutocastCell(cell, _DTYPES[precision], device.type)
