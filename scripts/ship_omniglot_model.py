"""Ship an Omniglot few-shot checkpoint: slim it (scripts/slim_checkpoint.py) and record
its training data as the folder name a user gives (``omniglot``: a folder holding Omniglot's
background archives) instead of the path on the machine that trained it.

Usage: python scripts/ship_omniglot_model.py SOURCE DEST [--data omniglot]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jiio_cli.checkpoint import load_checkpoint, save_checkpoint_like

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slim_checkpoint import slim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--data", default="omniglot")
    args = parser.parse_args()
    slim(args.source, args.dest)
    ckpt = load_checkpoint(args.dest)
    training = dict(ckpt.training_config or {})
    training["data"] = [args.data]
    extra = dict(ckpt.extra)
    extra["data_recorded_as"] = f"--data {args.data} (a folder holding the training archives)"
    save_checkpoint_like(args.dest, ckpt, training_config=training, extra=extra)
    print(f"wrote {args.dest} ({args.dest.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
