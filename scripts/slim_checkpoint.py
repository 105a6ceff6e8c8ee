"""Copy a training checkpoint without what only resuming needs, for shipping in models/.

Usage: python scripts/slim_checkpoint.py SOURCE DEST

Keeps the model tensors, the task, model kind and configs, step, metrics and the
per-epoch evaluations of the history; drops Adam's moments (``optim.*``) and the
per-step loss history, which grow with the run (a 15,000-step sinusoid run carries
about 2.5 MB of per-step history in its metadata). The result loads like the source
everywhere a trained model is read, but cannot be given to ``--resume``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jiio_cli.checkpoint import load_checkpoint, save_checkpoint_like


def slim(source: Path, dest: Path) -> Path:
    """Write the slimmed copy of ``source`` to ``dest``; returns ``dest``."""
    ckpt = load_checkpoint(source)
    history = json.loads(ckpt.extra.get("history", "[]"))
    extra = dict(ckpt.extra)
    extra["history"] = json.dumps([h for h in history if "epoch" in h])
    extra["slimmed"] = (
        f"copied from {source.name} by scripts/slim_checkpoint.py: optimizer state and "
        f"per-step history ({len(history)} entries) dropped"
    )
    model_only = {k: v for k, v in ckpt.tensors.items() if k.startswith("model.")}
    return save_checkpoint_like(dest, ckpt, model_only, extra=extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    path = slim(args.source, args.dest)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
