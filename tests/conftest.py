"""Shared fixtures: every device-parametrised test runs on CUDA too when a GPU is present.

The CUDA cases carry the ``cuda`` marker, so ``python -m pytest -m cuda`` runs just them on
a machine with a GPU (and selects none elsewhere).
"""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (
    [pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else []
)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)
