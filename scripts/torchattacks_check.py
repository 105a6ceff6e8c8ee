"""Independent check of jiio's attack numbers with the ``torchattacks`` package.

torchattacks' PGD / PGDL2 and APGD (cross-entropy and DLR losses, L∞ and L2) attack the
classifier through an ``nn.Module`` whose forward pass is a converged DEQ forward solve
with implicit-function gradients, so they see the true input gradient. Their adversarial
images are then scored exactly as jiio scores its own (fresh forward solve from zeros,
tight tolerance), on the same held-out images. jiio's standard evaluation (the per-image
worst case of JIIO, APGD-CE, APGD-DLR and PGD) should not leave a robust accuracy more
than 0.5 points above torchattacks' worst case.

Install the package without its dependencies (it needs nothing jiio lacks):

    pip install --no-deps torchattacks
    python scripts/torchattacks_check.py --eps linf:0.1 --eps l2:1.0 --images 100

Prints one JSON document: per budget, jiio's robust accuracy per method and its standard
row, and torchattacks' per attack (``steps`` steps, ``restarts`` restarts each) and the
per-image worst case of its attacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jiio_cli.engine import SolverConfig, forward_solve, implicit_fixed_point  # noqa: E402
from jiio_cli.models import DEQClassifier  # noqa: E402
from jiio_cli.tasks.adversarial.apgd import APGDConfig  # noqa: E402
from jiio_cli.tasks.adversarial.attacks import (  # noqa: E402
    COMMAND_ATTACK,
    PGDConfig,
    ThreatModel,
    classify,
)
from jiio_cli.tasks.adversarial.data import load_attack_set  # noqa: E402
from jiio_cli.tasks.adversarial.sweep import STANDARD_METHODS, run_attack_sweep  # noqa: E402
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


def make_attack(name: str, model: nn.Module, norm: str, eps: float, steps: int, seed: int):
    """One torchattacks attack by jiio's method name (pgd, apgd-ce, apgd-dlr)."""
    import torchattacks

    if name == "pgd":
        step = 2.5 * eps / steps
        cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        return cls(model, eps=eps, alpha=step, steps=steps)
    loss = "ce" if name == "apgd-ce" else "dlr"
    return torchattacks.APGD(
        model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=steps, loss=loss, seed=seed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--eps", action="append", default=None, help="norm:eps, repeatable")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument(
        "--attacks", default="apgd-ce,apgd-dlr", help="torchattacks attacks: pgd,apgd-ce,apgd-dlr"
    )
    parser.add_argument(
        "--jiio-methods",
        default=",".join(STANDARD_METHODS),
        help="jiio's methods run beside them (their per-image worst case is the last row); "
        "empty: torchattacks only",
    )
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    path = args.checkpoint or default_checkpoint("classifier")
    model, _ = load_model(path, {"adversarial"}, "classifier", device)
    for p in model.parameters():
        p.requires_grad_(False)
    images, labels, _ = load_attack_set(model.config, None, args.images)
    images, labels = images.to(device), labels.to(device)
    wrapped = ImplicitDEQ(model).eval()
    clean = classify(model, images).predictions == labels
    attacks = [a for a in args.attacks.split(",") if a]
    methods = [m for m in args.jiio_methods.split(",") if m]
    report = []
    for item in args.eps or ["linf:0.1", "l2:1.0"]:
        norm, eps_text = item.split(":")
        eps = float(eps_text)
        threat = ThreatModel(norm, eps)  # type: ignore[arg-type]
        started = time.perf_counter()
        ours = None
        if methods:
            ours = run_attack_sweep(
                model,
                images,
                labels,
                [threat],
                methods,  # type: ignore[arg-type]
                COMMAND_ATTACK,
                PGDConfig(),
                args.batch_size,
                0,
                apgd=APGDConfig(steps=args.steps, restarts=args.restarts),
                worst_label="standard",
            )
        jiio_seconds = time.perf_counter() - started
        theirs: dict[str, dict[str, object]] = {}
        survived_all = clean.clone()
        for name in attacks:
            robust = clean.clone()
            unconverged = torch.zeros_like(clean)
            started = time.perf_counter()
            for restart in range(args.restarts):
                torch.manual_seed(restart)
                attack = make_attack(name, wrapped, norm, eps, args.steps, restart)
                for start in range(0, images.shape[0], args.batch_size):
                    sl = slice(start, start + args.batch_size)
                    adversarial = attack(images[sl], labels[sl])
                    verdict = classify(model, adversarial)
                    robust[sl] &= verdict.predictions == labels[sl]
                    unconverged[sl] |= ~verdict.converged
            survived_all &= robust
            theirs[name] = {
                "robust_accuracy": float(robust.float().mean()),
                "eval_unconverged": float(unconverged.float().mean()),
                "seconds": time.perf_counter() - started,
            }
        rows = {r.method: r.as_dict() for r in ours.rows} if ours is not None else {}
        report.append(
            {
                "threat": threat.label(),
                "images": int(images.shape[0]),
                "clean_accuracy": float(clean.float().mean()),
                "jiio": {m: {k: rows[m][k] for k in _KEPT} for m in rows},
                "jiio_seconds": jiio_seconds,
                "torchattacks": theirs,
                "torchattacks_worst_robust_accuracy": float(survived_all.float().mean()),
                "torchattacks_settings": f"{args.steps} steps x {args.restarts} restarts each, "
                f"torchattacks {__import__('torchattacks').__version__}",
            }
        )
        print(json.dumps(report[-1]), file=sys.stderr)
    shown = path.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    document = {"checkpoint": str(shown), "rows": report, "torch": torch.__version__}
    text = json.dumps(document, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


_KEPT = (
    "robust_accuracy",
    "seconds",
    "eval_unconverged",
    "attack_unconverged",
    "mean_f_evals",
    "unconverged_counted_broken",
)


if __name__ == "__main__":
    main()
