"""Ship an Omniglot few-shot checkpoint: slim it (scripts/slim_checkpoint.py) and record
its training data as the folder name a user gives (``omniglot``: a folder holding Omniglot's
background archives) instead of the path on the machine that trained it. With
``--transductive-weight β`` the model's inner problem also sees the task's unlabelled
queries (``MetaConfig.transductive_weight``), and with ``--soft-kmeans-steps K`` its
read-out refines the centroids on them first (``MetaConfig.soft_kmeans_steps``); both
are inference settings: the tensors are unchanged, and SOURCE may be DEST.

Usage: python scripts/ship_omniglot_model.py SOURCE DEST [--data omniglot]
       [--transductive-weight B] [--offset-weight W] [--soft-kmeans-steps K]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jiio_cli.checkpoint import load_checkpoint, save_checkpoint_like
from jiio_cli.models import MetaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slim_checkpoint import slim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--data", default="omniglot")
    parser.add_argument("--transductive-weight", type=float, default=None)
    parser.add_argument("--offset-weight", type=float, default=None)
    parser.add_argument("--soft-kmeans-steps", type=int, default=None)
    args = parser.parse_args()
    if args.source.resolve() != args.dest.resolve():
        slim(args.source, args.dest)
    ckpt = load_checkpoint(args.dest)
    training = dict(ckpt.training_config or {})
    training["data"] = [args.data]
    extra = dict(ckpt.extra)
    if args.source.resolve() != args.dest.resolve() or "data_recorded_as" not in extra:
        extra["data_recorded_as"] = f"--data {args.data} (a folder holding the training archives)"
    model = dict(ckpt.model_config)
    for key in ("transductive_weight", "offset_weight", "soft_kmeans_steps"):
        if getattr(args, key) is not None:
            model[key] = getattr(args, key)
    MetaConfig(**model)  # refuse a configuration the model would not load with
    save_checkpoint_like(args.dest, ckpt, training_config=training, extra=extra, model_config=model)
    print(f"wrote {args.dest} ({args.dest.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
