"""Where the repository's shipped sample data lives."""

from __future__ import annotations

from pathlib import Path

from jiio_cli.errors import JiioError

__all__ = ["sample_data_dir"]


def sample_data_dir() -> Path:
    """The repository's ``sample_data/`` folder (MNIST-5k and the demo digits).

    Raises:
        JiioError: when the folder is missing, e.g. in an install without the repository.
    """
    folder = Path(__file__).resolve().parents[2] / "sample_data"
    if not folder.is_dir():
        raise JiioError(
            f"sample data folder {folder} is missing; run jiio from a full checkout of the "
            "repository (pip install -e .)"
        )
    return folder
