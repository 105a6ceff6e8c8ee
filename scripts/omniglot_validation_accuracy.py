"""Score Prototypical Network checkpoints on the validation characters of their run (the
training alphabets' held-back 15 %): 20-way 1-shot across alphabets and 5-way 1-shot
within one alphabet (the validation characters have no alphabet of 20), 5 queries per
class, the same episodes for every checkpoint. Used to choose the Omniglot preprocessing.

Usage: python scripts/omniglot_validation_accuracy.py EPISODES CHECKPOINT [CHECKPOINT ...]
Prints one line per checkpoint, then one JSON object: per kind (mean, 95 % half-width).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from jiio_cli.checkpoint import load_checkpoint
from jiio_cli.data.episodes import draw_episodes
from jiio_cli.models import MetaConfig
from jiio_cli.tasks.fewshot.loading import load_protonet, spec_from_json
from jiio_cli.tasks.fewshot.protonet import protonet_predictions
from jiio_cli.tasks.fewshot.training import training_pools
from jiio_cli.training import derived_generator


def main() -> None:
    torch.set_num_threads(1)
    episodes = int(sys.argv[1])
    out = {}
    for path in sys.argv[2:]:
        ckpt = load_checkpoint(Path(path), expected_task={"meta"})
        cfg = ckpt.model_config
        model_config = MetaConfig(image_size=cfg["image_size"], preprocess=cfg["preprocess"])
        _, val = training_pools(spec_from_json(ckpt.training_config, model_config))
        model = load_protonet(Path(path), torch.device("cpu"))
        scores = {}
        for kind, ways in (("across", 20), ("within", 5)):
            generator = derived_generator(0, 99, ways)
            accuracy: list[float] = []
            for _ in range(episodes // 20):
                ep = draw_episodes(val, kind, 20, ways, 1, 5, generator)
                right = protonet_predictions(model, ep) == ep.query_labels
                accuracy += right.float().mean(1).tolist()
            t = torch.tensor(accuracy)
            scores[kind] = (float(t.mean()), float(1.96 * t.std() / len(t) ** 0.5))
        out[path] = {"preprocess": cfg["preprocess"], "val_classes": val.num_classes, **scores}
        print(path, out[path], flush=True)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
