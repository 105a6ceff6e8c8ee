"""JIIO's default settings for latent inference at test time, in one place.

Plain numbers and no imports, so that ``jiio reconstruct`` can show them as its option
defaults without loading the engine, and the library
(:func:`~jiio_cli.tasks.inverse.problems.reconstruction_settings`), the command and
``jiio bench --task reconstruct`` cannot drift apart. BENCHMARKS.md has the runs that
chose them on the shipped decoder.
"""

from __future__ import annotations

__all__ = [
    "RECONSTRUCTION_ALPHA_X",
    "RECONSTRUCTION_MEMORY",
    "RECONSTRUCTION_REFINE_ITERATIONS",
    "RECONSTRUCTION_START_ALPHA_X",
    "RECONSTRUCTION_START_ITERATIONS",
    "RECONSTRUCTION_X_WEIGHT",
]

RECONSTRUCTION_ALPHA_X = 0.02
"""α_x, the latent code's step size after the start phase."""

RECONSTRUCTION_START_ALPHA_X = 0.06
"""α_x of a reconstruction's first iterations (the start phase)."""

RECONSTRUCTION_START_ITERATIONS = 30
"""How many iterations a reconstruction takes at ``RECONSTRUCTION_START_ALPHA_X``."""

RECONSTRUCTION_MEMORY = 10
"""Anderson history length m of the joint iteration."""

RECONSTRUCTION_X_WEIGHT = 10.0
"""Weight of the latent code in Anderson's least squares (``JIIOConfig.x_weight``)."""

RECONSTRUCTION_REFINE_ITERATIONS = 50
"""The most iterations of the final refinement of z* (and μ*) at the returned code."""
