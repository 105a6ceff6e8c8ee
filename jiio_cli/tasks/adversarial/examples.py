"""Write adversarial examples of an attack sweep as PNG files and annotated grids."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from jiio_cli.data import write_image
from jiio_cli.data.figures import write_attack_figure
from jiio_cli.tasks.adversarial.sweep import SweepResult

__all__ = ["save_attack_examples"]


def save_attack_examples(
    folder: Path, images: Tensor, labels: Tensor, result: SweepResult
) -> list[str]:
    """For each (method, ε): ``<method>-<norm>-<eps>/<i>_y<label>_p<pred>.png`` per kept
    example and ``<method>-<norm>-<eps>-grid.png`` (clean / amplified δ / adversarial).

    Returns the written paths (as strings), grids first.
    """
    written: list[str] = []
    norm = result.rows[0].norm if result.rows else "linf"
    for (method, eps), (adversarial, predictions) in result.examples.items():
        n = adversarial.shape[0]
        clean = images[:n].cpu()
        y = labels[:n].cpu()
        stem = f"{method}-{norm}-{eps:g}".replace("/", "_")
        grid = write_attack_figure(
            folder / f"{stem}-grid.png",
            clean,
            adversarial,
            y,
            result.clean_predictions[:n],
            predictions,
        )
        written.append(str(grid))
        for i in range(n):
            name = f"{i:04d}_y{int(y[i])}_p{int(predictions[i])}.png"
            written.append(str(write_image(folder / stem / name, adversarial[i])))
    return written
