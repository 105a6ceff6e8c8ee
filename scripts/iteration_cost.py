"""Where one JIIO iteration's time goes on the shipped decoder, piece by piece.

Usage: python scripts/iteration_cost.py [--batch-size 64] [--repeat 20]

On the reconstruct bench's batch (the first held-out MNIST-5k digits with a random
10×10 hole, seed 0) at the zero latent's fixed point, prints the median milliseconds of:

- the image head, literally (upsample 32 channels, then convolve) and factorised
  (:meth:`~jiio_cli.models.heads.ImageHead.upsampled_conv`);
- the reconstruction objective with its gradient in z, through either head;
- ``lagrangian_grads`` (f, the objective and one VJP: the model's cost of a JIIO
  iteration), with either head, and with the factorised head and the latent injection
  folded into one matrix (:meth:`~jiio_cli.models.decoder.DEQDecoder.inference_cell`,
  what latent inference solves on);
- Anderson's Gram row at memory 10 over the stacked state [z; x; μ], as ``bmm(H, g)``
  and as ``bmm(gᵀ, Hᵀ)`` (the form the solver uses);
- the latent injection's bilinear upsampling, ``F.interpolate`` against
  :func:`~jiio_cli.models.layers.bilinear_resize`, forward and backward.

Threads are PyTorch's default; set OMP_NUM_THREADS to fix them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from jiio_cli.bench.reconstruct import speed_batch
from jiio_cli.engine import SolverConfig, forward_solve, lagrangian_grads
from jiio_cli.models.layers import bilinear_resize
from jiio_cli.tasks.inverse.problems import reconstruction_problem
from jiio_cli.tasks.loading import load_decoder


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: allocations, kernel choice
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cpu")
    decoder, _ = load_decoder(None, device)
    _, observed, known = speed_batch(args.batch_size)
    problem = reconstruction_problem(decoder, observed, known, latent_weight=1e-3)
    x = problem.x0
    with torch.no_grad():
        z = forward_solve(problem.cell, x, problem.z0, SolverConfig(memory=5, max_iter=30)).z
    mu = 0.01 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    head = decoder.head

    def literal_head(state: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(state, size=head.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(head.conv(up))

    def objective_grad(image_of: Callable[[torch.Tensor], torch.Tensor]) -> None:
        zr = z.detach().requires_grad_(True)
        err = (image_of(zr) - observed) * known
        torch.autograd.grad(0.5 * err.pow(2).sum(), zr)

    rows: list[tuple[str, float]] = []
    with torch.no_grad():
        rows.append(
            ("image head, upsample then conv", median_ms(lambda: literal_head(z), args.repeat))
        )
        rows.append(("image head, factorised", median_ms(lambda: head(z), args.repeat)))
    rows.append(
        (
            "objective + grad, literal head",
            median_ms(lambda: objective_grad(literal_head), args.repeat),
        )
    )
    rows.append(
        ("objective + grad, factorised head", median_ms(lambda: objective_grad(head), args.repeat))
    )

    def literal_objective(state: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        # reconstruction_problem's objective, with the literal head.
        err = ((literal_head(state) - observed) * known).pow(2).flatten(1).sum(dim=1)
        return 0.5 * err + 0.5 * 1e-3 * code.pow(2).sum(dim=1)

    for name, objective in (("literal", literal_objective), ("factorised", problem.objective)):

        def grads(objective: Callable = objective) -> None:
            lagrangian_grads(problem.cell, objective, z, x, mu)

        rows.append(
            (f"lagrangian_grads (f, objective, VJP), {name} head", median_ms(grads, args.repeat))
        )
    folded = decoder.inference_cell()
    rows.append(
        (
            "lagrangian_grads, factorised head, folded injection",
            median_ms(lambda: lagrangian_grads(folded, problem.objective, z, x, mu), args.repeat),
        )
    )
    state = 2 * z[0].numel() + x.shape[1]
    history = torch.randn(args.batch_size, 10, state)
    g = torch.randn(args.batch_size, state)
    rows.append(
        ("Gram row, bmm(H, g)", median_ms(lambda: torch.bmm(history, g.unsqueeze(2)), args.repeat))
    )
    rows.append(
        (
            "Gram row, bmm(g^T, H^T)",
            median_ms(lambda: torch.bmm(g.unsqueeze(1), history.transpose(1, 2)), args.repeat),
        )
    )
    grid = torch.randn(args.batch_size, 32, 4, 4, requires_grad=True)
    size = decoder.cell.injection.spatial_size

    def resize_both_ways(resize: Callable[[torch.Tensor], torch.Tensor]) -> None:
        torch.autograd.grad(resize(grid).sum(), grid)

    rows.append(
        (
            "injection upsampling, F.interpolate (fwd+bwd)",
            median_ms(
                lambda: resize_both_ways(
                    lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                ),
                args.repeat,
            ),
        )
    )
    rows.append(
        (
            "injection upsampling, bilinear_resize (fwd+bwd)",
            median_ms(lambda: resize_both_ways(lambda t: bilinear_resize(t, size)), args.repeat),
        )
    )
    print(f"batch {args.batch_size}, {torch.get_num_threads()} thread(s), median of {args.repeat}")
    for name, ms in rows:
        print(f"{name:56s} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
