"""``jiio reconstruct``: inpaint and/or denoise images with a trained DEQ decoder.

The command reads the files, checks them (counts, sizes, output paths and the model's
training domain, all before any solve), calls
:func:`jiio_cli.tasks.inverse.reconstruction.reconstruct_images` (which does all the
image work: the solve at the model's size and channels, the result back at the input's,
the known pixels kept) and writes and reports what it returns. Inputs far from what the
decoder was trained on get a warning in words (``--strict`` refuses them). Unconverged
solves follow the rule of :mod:`jiio_cli.cli.unconverged`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from jiio_cli.cli.boundary import error_boundary
from jiio_cli.cli.options import (
    AllowUnconvergedOption,
    AlphaXOption,
    CompileOption,
    DebugOption,
    DecoderCheckpointOption,
    DeviceOption,
    IterationsOption,
    JsonOption,
    MemoryOption,
    SeedOption,
    TolOption,
    XWeightOption,
    common_options,
    in_panel,
)
from jiio_cli.cli.output import emit, print_table
from jiio_cli.cli.progress import progress_display
from jiio_cli.cli.unconverged import enforce_converged
from jiio_cli.data.images import image_write_format
from jiio_cli.errors import UsageError
from jiio_cli.tasks.inverse.defaults import (
    RECONSTRUCTION_ALPHA_X,
    RECONSTRUCTION_MEMORY,
    RECONSTRUCTION_START_ALPHA_X,
    RECONSTRUCTION_START_ITERATIONS,
    RECONSTRUCTION_X_WEIGHT,
)

__all__ = ["reconstruct"]


class ReconstructCommandConfig(BaseModel):
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


StrictOption = Annotated[
    bool,
    typer.Option(
        help="Refuse inputs far from the model's training data (another size by more than "
        "2x, colour into a greyscale model, a photo into a digit model) instead of warning."
    ),
]


def _check_counts(images: list[Path], masks: list[Path], refs: list[Path]) -> None:
    if len(masks) not in (0, 1, len(images)):
        raise UsageError(f"give one --mask for all images or one per image ({len(images)})")
    if len(refs) not in (0, len(images)):
        raise UsageError(f"give one --reference per image ({len(images)})")


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
        image_write_format(dst)  # an unknown suffix is refused now, not after the solve
        if dst.resolve() == src.resolve():
            raise UsageError(f"refusing to overwrite the input {src}; choose another --out")
    return paths


_AlphaX = in_panel(AlphaXOption, None, "JIIO's step size α_x on the latent code.")
_XWeight = in_panel(
    XWeightOption,
    None,
    "Weight of the latent code in Anderson's least squares (1: unweighted); "
    "changes the path, not the solution.",
)

_ExtraRounds = Annotated[
    int,
    typer.Option(
        help="Images not converged after --iterations continue from where they "
        "stopped, for up to this many more rounds of --iterations each (0: none)."
    ),
]
_RangeError = Annotated[
    float | None,
    typer.Option(
        help="τ², the variance per pixel of the decoder's range error; with "
        "--sigma S a share τ²/(τ² + S²) of each noisy observed pixel is mixed into the "
        "result, which raises PSNR and lowers SSIM (0: the decoder's output alone). "
        "Default: the checkpoint's estimate."
    ),
]


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
    checkpoint: DecoderCheckpointOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (one input) or folder (default: next to input)."),
    ] = None,
    reference: Annotated[
        list[Path] | None, typer.Option(help="Clean image(s) to score against (PSNR, SSIM).")
    ] = None,
    iterations: IterationsOption = 300,
    extra_rounds: _ExtraRounds = 2,
    tol: TolOption = 1e-2,
    alpha_x: _AlphaX = RECONSTRUCTION_ALPHA_X,
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
    memory: MemoryOption = RECONSTRUCTION_MEMORY,
    x_weight: _XWeight = RECONSTRUCTION_X_WEIGHT,
    range_error: _RangeError = None,
    allow_unconverged: AllowUnconvergedOption = False,
    strict: StrictOption = False,
    compile_graph: CompileOption = False,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Fill in missing pixels and/or remove noise, in images of any size and colour."""
    with error_boundary(debug=debug):
        common = common_options(device=device, seed=seed, json_output=json_output, debug=debug)
        opts = ReconstructCommandConfig(
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
        masks = mask or []
        refs = reference or []
        # Cheap checks first: counts, paths, sizes and the model's domain, before any solve.
        _check_counts(images, masks, refs)
        outputs = _output_paths(images, out)
        _run(images, outputs, masks, refs, opts, checkpoint, strict, allow_unconverged,
             compile_graph, common)  # fmt: skip


def _run(
    images: list[Path],
    outputs: list[Path],
    masks: list[Path],
    refs: list[Path],
    opts: ReconstructCommandConfig,
    checkpoint: Path | None,
    strict: bool,
    allow_unconverged: bool,
    compile_graph: bool,
    common: Any,
) -> None:
    """Load, check, solve (one library call), write and report: the command's work."""
    from jiio_cli.tasks.inverse.reconstruction import reconstruct_images
    from jiio_cli.tasks.loading import default_checkpoint, load_decoder

    torch.manual_seed(common.seed)
    path = checkpoint if checkpoint is not None else default_checkpoint("decoder")
    decoder, ckpt = load_decoder(path, common.torch_device)
    inputs = _read_inputs(images, masks, refs)
    domain = _model_domain(ckpt.extra, decoder.config)
    notes = _input_notes(images, inputs, decoder.config.image_size, opts.sigma, bool(masks))
    _check_domain(domain, images, inputs, strict, opts.sigma)
    settings, variance = _solve_settings(opts, ckpt, compile_graph, notes)

    started = time.perf_counter()
    label = f"reconstruct ({len(images)} image{'s' if len(images) > 1 else ''}, one batch)"
    with progress_display() as progress:
        progress.update(label, 0, len(images))
        restored = reconstruct_images(
            decoder,
            inputs.images,
            inputs.masks,
            settings,
            sigma=opts.sigma,
            range_error=variance,
            references=inputs.references or None,
        )
        progress.update(label, len(images), len(images))
    seconds = time.perf_counter() - started

    rows, unconverged = _write_outputs(images, outputs, restored, allow_unconverged)
    summary: dict[str, Any] = {
        **_averages(rows),
        "tol": opts.tol,
        "converged": not unconverged,
        "seconds": seconds,
        "range_error": variance,
        "device": str(common.torch_device),
        "checkpoint": str(path),
        "domain": domain.describe(),
        "notes": notes,
        "outputs": [r["output"] for r in rows if r["output"] is not None],
        "images": rows,
    }
    _report(summary, common.json_output)
    enforce_converged(
        unconverged,
        allow=allow_unconverged,
        fix="no output written for them; raise --iterations or --extra-rounds",
    )


def _input_notes(
    images: list[Path], inputs: _Inputs, size: int, sigma: float, masked: bool
) -> list[str]:
    """What the command does to the inputs, said once each (stderr, and in JSON)."""
    notes = list(inputs.notes)
    for image_path, img in zip(images, inputs.images, strict=True):
        h, w = img.shape[1:]
        if (h, w) != (size, size):
            notes.append(
                f"{image_path.name}: resized {w}x{h} to the model's {size}x{size} for the "
                "solve and the result back"
            )
    if not masked and sigma == 0:
        notes.append("no --mask and --sigma 0: the image is projected onto the model")
    return notes


def _solve_settings(
    opts: ReconstructCommandConfig, ckpt: Any, graph: bool, notes: list[str]
) -> tuple[Any, float]:
    """The inference settings of the options, and τ² (``--range-error`` or the checkpoint's)."""
    from jiio_cli.tasks.inverse.problems import (
        reconstruction_settings,
        reconstruction_step_options,
        trained_latent_weight,
    )
    from jiio_cli.tasks.inverse.range_error import stored_range_error

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
        refine_tol=opts.tol,
        graph=graph,
        tol=opts.tol,
        extra_rounds=opts.extra_rounds,
        **reconstruction_step_options(opts),
    )
    return settings, variance


def _write_outputs(
    images: list[Path], outputs: list[Path], restored: list[Any], allow_unconverged: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """Write each converged (or allowed) result; the rows and the unconverged images."""
    from jiio_cli.data import write_image

    rows: list[dict[str, Any]] = []
    unconverged: list[str] = []
    for image_path, target, result in zip(images, outputs, restored, strict=True):
        solve = result.solve
        written = solve.converged or allow_unconverged
        if written:
            write_image(target, result.image)
        else:
            reason = "diverged: NaN/Inf" if solve.failed else "not converged"
            unconverged.append(f"{image_path.name} ({reason})")
        rows.append(
            {
                "image": str(image_path),
                "output": str(target) if written else None,
                "objective": solve.objective,
                "iterations": solve.iterations,
                "residual": solve.residual,
                "residual_z": solve.residual_z,
                "residual_mu": solve.residual_mu,
                "residual_x": solve.residual_x,
                "converged": solve.converged,
                **result.metrics,
            }
        )
    return rows, unconverged


def _averages(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean objective and scores over the images, and the most iterations run."""
    out: dict[str, Any] = {
        "objective": sum(r["objective"] for r in rows) / len(rows),
        "iterations": max(r["iterations"] for r in rows),
    }
    for key in ("psnr", "ssim", "psnr_hole", "ssim_hole"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _report(summary: dict[str, Any], json_output: bool) -> None:
    """The JSON document, or the table with the notes and the written paths (stderr)."""
    if json_output:
        emit(summary, json_output=True)
        return
    _print_rows(summary["images"], summary["seconds"], summary["device"], summary["tol"])
    for note in summary["notes"]:
        typer.echo(f"note: {note}", err=True)
    # Whole, on lines of their own: a narrow terminal may fold the table's paths.
    for written_path in summary["outputs"]:
        typer.echo(f"wrote {written_path}", err=True)


_TABLE_COLUMNS = (
    "image",
    "output",
    "objective",
    "iterations",
    "residual",
    "converged",
    "psnr",
    "ssim",
    "psnr_hole",
    "ssim_hole",
)


def _print_rows(rows: list[dict[str, Any]], seconds: float, device: str, tol: float) -> None:
    """The table of results (stdout): one row per image, its output path included."""
    shown = [
        {
            key: (Path(row[key]).name if key == "image" else row[key])
            for key in _TABLE_COLUMNS
            if key in row
        }
        for row in rows
    ]
    for row in shown:
        if row["output"] is None:
            row["output"] = "(not written)"
    count = f"{len(rows)} image{'s' if len(rows) > 1 else ''}"
    print_table(
        shown,
        title="jiio reconstruct",
        caption=f"{seconds:.2f} s for {count} on {device}, solved as one batch; iterations: "
        f"run per image; converged: every block's residual (z, μ, x) ≤ --tol {tol:g}; "
        "*_hole: inside the hole only",
    )


@dataclass
class _Inputs:
    """The files of one ``jiio reconstruct`` call, read and checked."""

    images: list[Tensor] = field(default_factory=list)
    masks: list[Tensor | None] = field(default_factory=list)
    references: list[Tensor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_inputs(images: list[Path], masks: list[Path], refs: list[Path]) -> _Inputs:
    """Read every image in its own channels, its mask and reference; sizes are checked
    here, before any solve."""
    from jiio_cli.data import read_image, read_mask

    read = _Inputs()
    for i, image_path in enumerate(images):
        img, img_notes = read_image(image_path)
        read.notes += [f"{image_path.name}: {n}" for n in img_notes]
        h, w = img.shape[1:]
        read.images.append(img)
        read.masks.append(
            read_mask(masks[i if len(masks) > 1 else 0], (h, w))[None] if masks else None
        )
        if refs:
            ref, _ = read_image(refs[i], img.shape[0])
            if ref.shape != img.shape:
                raise UsageError(
                    f"reference {refs[i]} is {ref.shape[2]}x{ref.shape[1]} but the image "
                    f"{image_path} is {w}x{h}; give a reference the same size as its image"
                )
            read.references.append(ref)
    return read


def _model_domain(extra: dict[str, str], config: Any) -> Any:
    """The decoder's training domain from its metadata, or what its config tells."""
    from jiio_cli.tasks.inverse.domain import DataDomain

    recorded = DataDomain.from_metadata(extra)
    if recorded is not None:
        return recorded
    size, channels = config.image_size, config.image_channels
    return DataDomain("training images", size, size, channels)


def _check_domain(
    domain: Any, images: list[Path], inputs: _Inputs, strict: bool, sigma: float
) -> None:
    """Warn (stderr) about each input far from the model's domain; refuse it with --strict."""
    from jiio_cli.tasks.inverse.domain import domain_mismatches, mismatch_sentence

    for path, img, known in zip(images, inputs.images, inputs.masks, strict=True):
        has_hole = known is not None and not bool(known.all())
        problems = domain_mismatches(domain, img, has_hole, sigma)
        if not problems:
            continue
        sentence = mismatch_sentence(domain, path.name, problems)
        if strict:
            raise UsageError(f"{sentence}; refused because of --strict")
        typer.echo(f"warning: {sentence} (--strict refuses such inputs)", err=True)
