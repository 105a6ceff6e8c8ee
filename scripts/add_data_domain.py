"""Record the training data's domain in the shipped models' metadata (a one-off update).

Each image model in ``models/`` gets the metadata key ``data_domain``
(:class:`jiio_cli.tasks.inverse.domain.DataDomain`: name, size, channels, value range and
look), measured on the data it was trained on: the MNIST-5k training split for the MNIST
decoder and classifier, the glyph meta-training pool for the meta-models. Only the
metadata changes: every tensor is written back byte for byte, and the script checks so
before replacing a file. The sinusoid regressor has no image domain and is left alone.

    python scripts/add_data_domain.py            # update models/ in place
    python scripts/add_data_domain.py --check    # only report what would change
"""

from __future__ import annotations

import argparse
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from jiio_cli.data import load_mnist5k
from jiio_cli.data.atomic import atomic_write
from jiio_cli.data.episodes import load_glyph_pool
from jiio_cli.tasks.inverse.domain import DOMAIN_KEY, DataDomain, training_domain

MODELS = Path(__file__).resolve().parents[1] / "models"


def _mnist_domain() -> DataDomain:
    images, _ = load_mnist5k("train")
    return training_domain("MNIST digits", images)


def _glyph_domain(size: int) -> DataDomain:
    pool = load_glyph_pool("train").resized(size)
    images = torch.cat(pool.images)
    return training_domain("handwriting-like glyphs (rendered font characters)", images)


def domains() -> dict[str, DataDomain]:
    """The domain of each shipped image model, by file stem."""
    mnist = _mnist_domain()
    glyphs = _glyph_domain(20)
    return {
        "mnist-decoder": mnist,
        "mnist-classifier": mnist,
        "meta-glyphs": glyphs,
        "meta-glyphs-affine": glyphs,
        "meta-glyphs-metric": glyphs,
    }


def update(path: Path, domain: DataDomain, check: bool) -> str:
    """Write ``domain`` into ``path``'s metadata, tensors unchanged; what was done."""
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    wanted = domain.to_metadata()
    if metadata.get(DOMAIN_KEY) == wanted:
        return f"{path.name}: already records {domain.describe()}"
    if check:
        return f"{path.name}: would record {domain.describe()} (look: {domain.look})"
    metadata[DOMAIN_KEY] = wanted
    data = safetensors.torch.save(tensors, metadata=metadata)
    written = safetensors.torch.load(data)
    for name, tensor in tensors.items():
        before = tensor.contiguous().reshape(-1).view(torch.uint8)
        after = written[name].contiguous().reshape(-1).view(torch.uint8)
        if tensor.dtype != written[name].dtype or not torch.equal(before, after):
            raise SystemExit(f"{path.name}: tensor {name} would change; nothing written")
    atomic_write(path, lambda file: file.write(data), "checkpoint")
    return f"{path.name}: now records {domain.describe()} (look: {domain.look})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report only, write nothing")
    args = parser.parse_args()
    for stem, domain in domains().items():
        print(update(MODELS / f"{stem}.safetensors", domain, args.check))


if __name__ == "__main__":
    main()
