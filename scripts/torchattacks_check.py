"""Independent check of jiio's attack numbers with the ``torchattacks`` package.

torchattacks' PGD (L∞) and PGDL2 (L2) attack the classifier through an ``nn.Module``
whose forward pass is a converged DEQ forward solve with implicit-function gradients,
so they see the true input gradient. Their adversarial images are then scored exactly
as jiio scores its own (fresh forward solve from zeros, tight tolerance), on the same
held-out images. jiio's best attack should not be beaten by more than 2 points.

Install the package without its dependencies (it needs nothing jiio lacks):

    pip install --no-deps torchattacks
    python scripts/torchattacks_check.py --eps linf:0.1 --eps l2:1.0 --images 500

Prints one JSON document: per budget, jiio's robust accuracy (JIIO, PGD-20 and the
worst of both) and torchattacks' (``steps`` steps, ``restarts`` random restarts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jiio_cli.engine import SolverConfig, forward_solve, implicit_fixed_point  # noqa: E402
from jiio_cli.models import DEQClassifier  # noqa: E402
from jiio_cli.tasks.adversarial.attacks import (  # noqa: E402
    COMMAND_ATTACK,
    PGDConfig,
    ThreatModel,
    classify,
)
from jiio_cli.tasks.adversarial.data import load_attack_set  # noqa: E402
from jiio_cli.tasks.adversarial.sweep import run_attack_sweep  # noqa: E402
from jiio_cli.tasks.loading import default_checkpoint, load_model  # noqa: E402


class ImplicitDEQ(nn.Module):
    """Logits of a DEQ classifier with gradients by the implicit function theorem."""

    def __init__(self, model: DEQClassifier) -> None:
        super().__init__()
        self.model = model
        self.solve = SolverConfig(memory=10, max_iter=200, tol=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        z0 = self.model.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        z_star = forward_solve(self.model.cell, x.detach(), z0, self.solve).z
        z = implicit_fixed_point(self.model.cell, z_star, x, self.solve)
        return self.model.head(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--eps", action="append", default=None, help="norm:eps, repeatable")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torchattacks

    device = torch.device(args.device)
    path = args.checkpoint or default_checkpoint("classifier")
    model, _ = load_model(path, {"adversarial"}, "classifier", device)
    for p in model.parameters():
        p.requires_grad_(False)
    images, labels, _ = load_attack_set(model.config, None, args.images)
    images, labels = images.to(device), labels.to(device)
    wrapped = ImplicitDEQ(model).eval()
    report = []
    for item in args.eps or ["linf:0.1", "linf:0.2", "linf:0.3", "l2:1.0"]:
        norm, eps_text = item.split(":")
        eps = float(eps_text)
        threat = ThreatModel(norm, eps)  # type: ignore[arg-type]
        ours = run_attack_sweep(
            model,
            images,
            labels,
            [threat],
            ["jiio", "pgd"],
            COMMAND_ATTACK,
            PGDConfig(),
            args.batch_size,
            0,
        )
        step = 2.5 * eps / args.steps
        robust = torch.ones_like(labels, dtype=torch.bool)
        for restart in range(args.restarts):
            torch.manual_seed(restart)
            if norm == "linf":
                attack = torchattacks.PGD(wrapped, eps=eps, alpha=step, steps=args.steps)
            else:
                attack = torchattacks.PGDL2(wrapped, eps=eps, alpha=step, steps=args.steps)
            for start in range(0, images.shape[0], args.batch_size):
                sl = slice(start, start + args.batch_size)
                adversarial = attack(images[sl], labels[sl])
                verdict = classify(model, adversarial)
                robust[sl] &= verdict.predictions == labels[sl]
        clean = classify(model, images).predictions == labels
        rows = {r.method: r.robust_accuracy for r in ours.rows}
        report.append(
            {
                "threat": threat.label(),
                "images": int(images.shape[0]),
                "clean_accuracy": float(clean.float().mean()),
                "jiio_robust_accuracy": rows["jiio"],
                "jiio_pgd20_robust_accuracy": rows["pgd"],
                "jiio_best_robust_accuracy": rows["worst"],
                "torchattacks_robust_accuracy": float((robust & clean).float().mean()),
                "torchattacks": f"{'PGD' if norm == 'linf' else 'PGDL2'} "
                f"{args.steps} steps x {args.restarts} restarts, step {step:.4g}",
            }
        )
        print(json.dumps(report[-1]), file=sys.stderr)
    print(json.dumps({"checkpoint": str(path), "rows": report}, indent=2))


if __name__ == "__main__":
    main()
