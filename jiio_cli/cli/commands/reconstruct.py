"""``jiio reconstruct``: inpaint and/or denoise images with a trained DEQ decoder.

The latent code of each image is inferred by JIIO from its known pixels and decoded.
Images whose size differs from the model's are resized for the solve and the decoded
image is resized back. The observed pixels are then combined with it by the decoder's
range-error model (:mod:`jiio_cli.tasks.inverse.range_error`): kept exactly when the input is
noise-free, mixed in by τ²/(τ² + σ²) when it is noisy, with the decoder's range-error
variance τ² fitted on noisy training digits and stored in the checkpoint
(``--range-error`` overrides it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from pydantic import BaseModel, ConfigDict, Field

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    CompileOption,
    DebugOption,
    DeviceOption,
    JsonOption,
    SeedOption,
    common_options,
)
from jiio_cli.cli.output import emit, print_table
from jiio_cli.errors import JiioError, UsageError
from jiio_cli.tasks.inverse.defaults import (
    RECONSTRUCTION_ALPHA_X,
    RECONSTRUCTION_MEMORY,
    RECONSTRUCTION_START_ALPHA_X,
    RECONSTRUCTION_START_ITERATIONS,
    RECONSTRUCTION_X_WEIGHT,
)

__all__ = ["reconstruct"]


class ReconstructOptions(BaseModel):
    """Validated numeric options of ``jiio reconstruct``."""

    model_config = ConfigDict(extra="forbid")

    sigma: float = Field(ge=0, le=1)
    iterations: int = Field(ge=2, le=10_000)
    extra_rounds: int = Field(ge=0, le=100)
    tol: float = Field(gt=0, lt=1)
    alpha_x: float = Field(gt=0, le=10)
    alpha_x_start: float = Field(gt=0, le=10)
    start_iterations: int = Field(ge=0, le=10_000)
    memory: int = Field(ge=1, le=100)
    x_weight: float = Field(gt=0, le=1e4, allow_inf_nan=False)
    range_error: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)


def _output_paths(inputs: list[Path], out: Path | None) -> list[Path]:
    if out is None:
        paths = [p.with_name(f"{p.stem}-restored.png") for p in inputs]
    elif len(inputs) == 1 and out.suffix:
        paths = [out]
    else:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} must be a folder when several images are given")
        paths = [out / f"{p.stem}-restored.png" for p in inputs]
    for src, dst in zip(inputs, paths, strict=True):
        if dst.resolve() == src.resolve():
            raise UsageError(f"refusing to overwrite the input {src}; choose another --out")
    return paths


def reconstruct(
    images: Annotated[list[Path], typer.Argument(help="Input images (PNG, JPEG; grey or colour).")],
    mask: Annotated[
        list[Path] | None,
        typer.Option(
            help="Known-pixel mask: white = known, black = missing. One for all "
            "images, or one per image in order."
        ),
    ] = None,
    sigma: Annotated[
        float, typer.Option(help="Noise level of the input on [0, 1] (0: clean).")
    ] = 0.0,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", "-c", help="Decoder checkpoint (default: shipped)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (one input) or folder (default: next to input)."),
    ] = None,
    reference: Annotated[
        list[Path] | None, typer.Option(help="Clean image(s) to score against (PSNR, SSIM).")
    ] = None,
    iterations: Annotated[int, typer.Option(help="JIIO iterations of the solve.")] = 300,
    extra_rounds: Annotated[
        int,
        typer.Option(
            help="Images not converged after --iterations continue from where they "
            "stopped, for up to this many more rounds of --iterations each (0: none)."
        ),
    ] = 2,
    tol: Annotated[float, typer.Option(help="Convergence tolerance of the solve.")] = 1e-2,
    alpha_x: Annotated[
        float, typer.Option(help="JIIO step size on the latent code.")
    ] = RECONSTRUCTION_ALPHA_X,
    alpha_x_start: Annotated[
        float,
        typer.Option(
            help="Step size of the first --start-iterations iterations, then --alpha-x "
            "(equal to --alpha-x for a constant step)."
        ),
    ] = RECONSTRUCTION_START_ALPHA_X,
    start_iterations: Annotated[
        int, typer.Option(help="Iterations at --alpha-x-start (0: none).")
    ] = RECONSTRUCTION_START_ITERATIONS,
    memory: Annotated[
        int, typer.Option(help="Anderson history length of the solve.")
    ] = RECONSTRUCTION_MEMORY,
    x_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the latent code in Anderson's least squares (1: unweighted); "
            "changes the path, not the solution."
        ),
    ] = RECONSTRUCTION_X_WEIGHT,
    range_error: Annotated[
        float | None,
        typer.Option(
            help="τ², the variance per pixel of the decoder's range error; with "
            "--sigma S a share τ²/(τ² + S²) of each noisy observed pixel is mixed into the "
            "result, which raises PSNR and lowers SSIM (0: the decoder's output alone). "
            "Default: the checkpoint's estimate."
        ),
    ] = None,
    allow_unconverged: Annotated[
        bool, typer.Option(help="Write results and exit 0 even if some solves did not converge.")
    ] = False,
    compile_graph: CompileOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Fill in missing pixels and/or remove noise. Inputs of any size are resized to the
    model's resolution for the solve and the result is resized back."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        opts = ReconstructOptions(
            sigma=sigma,
            iterations=iterations,
            extra_rounds=extra_rounds,
            tol=tol,
            alpha_x=alpha_x,
            alpha_x_start=alpha_x_start,
            start_iterations=start_iterations,
            memory=memory,
            x_weight=x_weight,
            range_error=range_error,
        )
        from jiio_cli.data import read_image, read_mask, resize_image, resize_mask, write_image
        from jiio_cli.metrics import psnr, ssim
        from jiio_cli.tasks.inverse.problems import reconstruct as run_reconstruction
        from jiio_cli.tasks.inverse.problems import reconstruction_settings, trained_latent_weight
        from jiio_cli.tasks.inverse.range_error import posterior_image, stored_range_error
        from jiio_cli.tasks.loading import default_checkpoint, load_decoder

        dev = common.torch_device
        torch.manual_seed(common.seed)
        path = checkpoint if checkpoint is not None else default_checkpoint("decoder")
        decoder, ckpt = load_decoder(path, dev)
        cfg = decoder.config
        size, channels = cfg.image_size, cfg.image_channels
        masks = mask or []
        if len(masks) not in (0, 1, len(images)):
            raise UsageError(f"give one --mask for all images or one per image ({len(images)})")
        refs = reference or []
        if len(refs) not in (0, len(images)):
            raise UsageError(f"give one --reference per image ({len(images)})")
        outputs = _output_paths(images, out)

        notes: list[str] = []
        observed, known, originals, known_full = [], [], [], []
        for i, image_path in enumerate(images):
            img, img_notes = read_image(image_path, channels)
            notes += [f"{image_path.name}: {n}" for n in img_notes]
            h, w = img.shape[1:]
            if masks:
                m = read_mask(masks[i if len(masks) > 1 else 0], (h, w)).float()[None]
            else:
                m = torch.ones(1, h, w)
            if (h, w) != (size, size):
                notes.append(f"{image_path.name}: resized {w}x{h} to the model's {size}x{size}")
            originals.append(img)
            known_full.append(m)
            observed.append(resize_image(img, size))
            known.append((resize_mask(m.bool()[0], size)).float()[None])
        if not masks and opts.sigma == 0:
            notes.append("no --mask and --sigma 0: the image is projected onto the model")
        obs = torch.stack(observed).to(dev)
        kn = torch.stack(known).to(dev)
        obs = obs * kn

        variance = opts.range_error
        if variance is None:
            variance = stored_range_error(ckpt.extra)
            if variance is None:
                variance = 0.0
                if opts.sigma > 0:
                    notes.append("the checkpoint has no range error: the decoder's output is used")
        settings = reconstruction_settings(
            opts.iterations,
            latent_weight=trained_latent_weight(ckpt.training_config),
            alpha_x=opts.alpha_x,
            alpha_x_start=opts.alpha_x_start,
            start_iterations=opts.start_iterations,
            memory=opts.memory,
            x_weight=opts.x_weight,
            refine_tol=opts.tol,
            graph=compile_graph,
            tol=opts.tol,
            refine_iterations=50,
            extra_rounds=opts.extra_rounds,
        )
        started = time.perf_counter()
        recon, result = run_reconstruction(decoder, obs, kn, settings)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - started

        rows: list[dict[str, Any]] = []
        failed: list[str] = []
        for i, image_path in enumerate(images):
            h, w = originals[i].shape[1:]
            full = (
                resize_image(recon[i].cpu(), (h, w)) if (h, w) != (size, size) else recon[i].cpu()
            )
            if masks or opts.sigma > 0:  # without either, the output is the projection itself
                full = posterior_image(
                    full[None], originals[i][None], known_full[i][None], opts.sigma, variance
                )[0]
            ok = bool(result.converged[i]) and not bool(result.failed[i])
            row: dict[str, Any] = {
                "image": str(image_path),
                "output": str(outputs[i]),
                "objective": float(result.objective[i]),
                "iterations": int(result.iterations[i]),
                "residual": float(
                    max(result.residual_z[i], result.residual_mu[i], result.residual_x[i])
                ),
                "converged": ok,
            }
            if refs:
                ref, _ = read_image(refs[i], channels)
                if ref.shape != full.shape:
                    raise UsageError(
                        f"reference {refs[i]} is {ref.shape[2]}x{ref.shape[1]} "
                        f"but the image is {w}x{h}"
                    )
                row["psnr"] = float(psnr(full[None], ref[None])[0])
                row["ssim"] = float(ssim(full[None], ref[None])[0])
            if ok or allow_unconverged:
                write_image(outputs[i], full)
            else:
                row["output"] = None
                reason = "diverged: NaN/Inf" if bool(result.failed[i]) else "not converged"
                failed.append(f"{image_path.name} ({reason})")
            rows.append(row)

        summary: dict[str, Any] = {
            "objective": sum(r["objective"] for r in rows) / len(rows),
            "iterations": max(r["iterations"] for r in rows),
            "converged": not failed and all(r["converged"] for r in rows),
            "seconds": seconds,
            "range_error": variance,
            "device": str(dev),
            "checkpoint": str(path),
            "notes": notes,
            "images": rows,
        }
        if refs:
            summary["psnr"] = sum(r["psnr"] for r in rows) / len(rows)
            summary["ssim"] = sum(r["ssim"] for r in rows) / len(rows)
        if common.json_output:
            emit(summary, json_output=True)
        else:
            table_rows = [
                {"image": Path(r["image"]).name}
                | {k: v for k, v in r.items() if k not in ("output", "image")}
                for r in rows
            ]
            count = f"{len(rows)} image{'s' if len(rows) > 1 else ''}"
            print_table(
                table_rows,
                title="jiio reconstruct",
                caption=f"{seconds:.2f} s for {count} on {dev}, solved as one batch",
            )
            for note in notes:
                typer.echo(f"note: {note}", err=True)
        if failed:
            raise JiioError(
                f"the solve did not converge for {', '.join(failed)}; no output written; "
                "raise --iterations or --extra-rounds, or pass --allow-unconverged"
            )
