"""Print engine timings (f, f + VJP, one JIIO iteration) as JSON lines, for BENCHMARKS.md.

Usage: python scripts/engine_timing.py [--device cuda] [--sizes 64x64x32,...] [--memories 5,20]
"""

from __future__ import annotations

import argparse
import json

import torch

from jiio_cli.bench.engine import time_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="64x64x32", help="BATCHxCHANNELSxSIZE, comma-separated")
    parser.add_argument("--memories", default="5,20")
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for size in args.sizes.split(","):
        batch, channels, side = (int(v) for v in size.split("x"))
        for memory in (int(m) for m in args.memories.split(",")):
            t = time_engine(batch, channels, side, memory, device, iterations=args.iterations)
            print(json.dumps({"device": name, "torch": torch.__version__, **t.as_dict()}))


if __name__ == "__main__":
    main()
