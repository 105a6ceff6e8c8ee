"""CUDA-graph replay of a solver iteration.

A solver iteration launches a few hundred small kernels (the cell, its VJP, the
projection, the residuals, Anderson's update); at the batch sizes of DEQ work the GPU
finishes them faster than Python can launch them, so an eager iteration costs several
times the arithmetic it does. :class:`GraphedStep` records one iteration as a CUDA graph
and replays it: one launch per iteration.

Contract for the recorded step: it reads and writes only tensors that live across
iterations (updated in place), never synchronises with the host, never copies from host
memory, and takes every iteration-dependent value (the iteration counter, step-size
schedules) from device tensors. The solvers in this package are written that way.

Capture can still fail on an op PyTorch cannot record (a user's objective that calls
``.item()``, a linear-algebra backend that allocates outside the caching allocator):
then the solve goes on eagerly, with the same results, and ``failure`` says why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["GraphedStep"]

WARMUP_STEPS = 2
"""Eager steps on a side stream before capture (lazy library initialisation)."""


class GraphedStep:
    """Run ``step`` eagerly for a few iterations, then as a replayed CUDA graph.

    Args:
        step: the in-place iteration (see the module's contract).
        enabled: capture at all (False: every call runs ``step`` eagerly).
    """

    def __init__(self, step: Callable[[], None], enabled: bool) -> None:
        self.step = step
        self.enabled = enabled and torch.cuda.is_available()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failure: str | None = None
        self._calls = 0

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self) -> None:
        self._calls += 1
        if self.graph is not None:
            self.graph.replay()
            return
        if not self.enabled:
            self.step()
            return
        if self._calls <= WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream().wait_stream(side)
            return
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step()
        except Exception as exc:  # any capture failure means: run eagerly
            self.failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.enabled = False
            torch.cuda.synchronize()
            self.step()
            return
        self.graph = graph
        graph.replay()
