"""Users' mistakes, each with the command that makes it and the exit code it must get.

Shared by the tests and by ``tests/cli/test_error_table.py``, which renders them, with the
message each one actually gets, into ``docs/errors.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from classifiers import save_classifier, save_foreign_checkpoint
from meta_models import write_meta_folders
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "sample_data" / "digits"
MODEL = ROOT / "models" / "mnist-decoder.safetensors"
GLYPH_META_MODEL = ROOT / "models" / "meta-glyphs.safetensors"
SINUSOID_MODEL = ROOT / "models" / "meta-sinusoid.safetensors"


@dataclass(frozen=True)
class BadInput:
    """One mistake: what it is, the argv after ``jiio`` (given a scratch folder), exit code."""

    what: str
    argv: Callable[[Path], list[str]]
    code: int


def prepare(tmp: Path) -> None:
    """Create the broken files the cases refer to."""
    (tmp / "junk.png").write_bytes(np.random.default_rng(0).bytes(300))
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(tmp / "big_mask.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp / "black_mask.png")
    (tmp / "bad.toml").write_text('task = "denoise"\nepochz = 2\n')  # a misspelt option
    ramp = np.linspace(0, 255, 96 * 96 * 3).reshape(96, 96, 3).astype(np.uint8)
    Image.fromarray(ramp).save(tmp / "colour_photo.png")  # far from the digits' domain
    good = MODEL.read_bytes()
    (tmp / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (tmp / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + bytes(40))
    save_foreign_checkpoint(tmp / "classifier.safetensors")
    (tmp / "empty").mkdir(exist_ok=True)
    write_meta_folders(tmp)
    save_classifier(tmp / "small_classifier.safetensors")
    (tmp / "flat").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp / "flat" / "a.png")
    rng = np.random.default_rng(0)
    np.savez(
        tmp / "labels_12.npz",
        images=rng.integers(0, 256, (4, 28, 28), np.uint8),
        labels=np.array([0, 3, 12, 1]),
    )


def _rec(*args: str) -> Callable[[Path], list[str]]:
    digit = str(DIGITS / "digit_1_noisy.png")
    return lambda t: [
        "reconstruct",
        *(a.replace("{t}", str(t)).replace("{digit}", digit) for a in args),
        "--device",
        "cpu",
    ]


def _on_checkpoint(
    command: str, checkpoint: str, args: tuple[str, ...]
) -> Callable[[Path], list[str]]:
    """``command -c <t>/checkpoint ARGS --device cpu``, ``{t}`` in ARGS the cases' folder."""
    return lambda t: [
        command,
        "-c",
        str(t / checkpoint),
        *(a.replace("{t}", str(t)) for a in args),
        "--device",
        "cpu",
    ]


def _attack(*args: str) -> Callable[[Path], list[str]]:
    return _on_checkpoint("attack", "small_classifier.safetensors", args)


def _adapt(*args: str) -> Callable[[Path], list[str]]:
    return _on_checkpoint("adapt", "meta.safetensors", args)


def _sinusoid(*args: str, model: Path = SINUSOID_MODEL) -> Callable[[Path], list[str]]:
    return lambda t: ["adapt", "--dataset", "sinusoid", "-c", str(model), *args, "--device", "cpu"]


_META_HEAD = ("--task", "meta", "--readout", "head")
_PSEUDO_QUERIES = ("--task", "meta", "--readout", "centroids", "--support-loss", "pseudo-queries")


def _bench(task: str, *args: str) -> Callable[[Path], list[str]]:
    return lambda t: ["bench", "--task", task, *args, "--device", "cpu"]


def _train(*args: str) -> Callable[[Path], list[str]]:
    return lambda t: ["train", *(a.replace("{t}", str(t)) for a in args), "--device", "cpu"]


CASES: list[BadInput] = [
    BadInput("reconstruct: missing image file", _rec("{t}/missing.png"), 2),
    BadInput("reconstruct: a folder instead of an image", _rec("{t}/empty"), 2),
    BadInput("reconstruct: random bytes named .png", _rec("{t}/junk.png"), 2),
    BadInput("reconstruct: mask of another size", _rec("{digit}", "--mask", "{t}/big_mask.png"), 2),
    BadInput(
        "reconstruct: mask with no known pixel", _rec("{digit}", "--mask", "{t}/black_mask.png"), 2
    ),
    BadInput("reconstruct: negative --sigma", _rec("{digit}", "--sigma", "-0.1"), 2),
    BadInput("reconstruct: negative --range-error", _rec("{digit}", "--range-error", "-1"), 2),
    BadInput(
        "reconstruct: checkpoint of another task",
        _rec("{digit}", "-c", "{t}/classifier.safetensors"),
        2,
    ),
    BadInput(
        "reconstruct: truncated checkpoint", _rec("{digit}", "-c", "{t}/truncated.safetensors"), 1
    ),
    BadInput(
        "reconstruct: pickle file as checkpoint", _rec("{digit}", "-c", "{t}/pickle.safetensors"), 1
    ),
    BadInput("reconstruct: output over the input", _rec("{digit}", "--out", "{digit}"), 2),
    BadInput("reconstruct: --x-weight 0", _rec("{digit}", "--x-weight", "0"), 2),
    BadInput(
        "reconstruct: reference of another size",
        _rec("{digit}", "--reference", "{t}/big_mask.png"),
        2,
    ),
    BadInput("reconstruct: a photo with --strict", _rec("{t}/colour_photo.png", "--strict"), 2),
    BadInput("reconstruct: --memory 0", _rec("{digit}", "--memory", "0"), 2),
    BadInput(
        "reconstruct: unsupported output format",
        _rec("{digit}", "--out", "{t}/out.bmpx", "--allow-unconverged"),
        2,
    ),
    BadInput(
        "any command: unknown CUDA device",
        lambda t: ["reconstruct", str(DIGITS / "digit_1.png"), "--device", "cuda:99"],
        2,
    ),
    BadInput("train: malformed --sigma", _train("--sigma", "abc"), 2),
    BadInput("train: --sigma range low > high", _train("--sigma", "0.3:0.1"), 2),
    BadInput("train: denoise without noise", _train("--task", "denoise", "--sigma", "0"), 2),
    BadInput("train: inpaint without holes", _train("--task", "inpaint", "--hole-size", "0"), 2),
    BadInput(
        "train: --state-resolution for a classifier",
        _train("--task", "adversarial", "--state-resolution", "full"),
        2,
    ),
    BadInput("train: unknown --augment", _train("--augment", "rotate:3"), 2),
    BadInput(
        "train: an option of another task",
        _train("--task", "adversarial", "--latent-dim", "8"),
        2,
    ),
    BadInput(
        "train: --augment for a classifier",
        _train("--task", "adversarial", "--augment", "shift:1"),
        2,
    ),
    BadInput("train: an unknown key in a --config recipe", _train("--config", "{t}/bad.toml"), 2),
    BadInput("train: negative --max-grad-norm", _train("--max-grad-norm", "-1"), 2),
    BadInput(
        "train: negative --max-grad-norm (meta)",
        _train("--task", "meta", "--max-grad-norm", "-1"),
        2,
    ),
    BadInput("train: unknown --readout", _train("--task", "meta", "--readout", "knn"), 2),
    BadInput("train: --context-penalty 0", _train("--task", "meta", "--context-penalty", "0"), 2),
    BadInput("train: unknown --support-loss", _train("--task", "meta", "--support-loss", "knn"), 2),
    BadInput(
        "train: --support-loss centroids with the head read-out",
        _train("--task", "meta", "--readout", "head", "--support-loss", "centroids"),
        2,
    ),
    BadInput(
        "train: --pseudo-augment without pseudo-queries",
        _train("--task", "meta", "--readout", "centroids", "--pseudo-augment", "affine:1"),
        2,
    ),
    BadInput(
        "train: --pseudo-copies without pseudo-queries",
        _train("--task", "meta", "--readout", "centroids", "--pseudo-copies", "4"),
        2,
    ),
    BadInput("train: --pseudo-copies 0", _train(*_PSEUDO_QUERIES, "--pseudo-copies", "0"), 2),
    *(
        BadInput(
            f"train: --pseudo-augment {text}",
            _train(*_PSEUDO_QUERIES, "--pseudo-augment", text),
            2,
        )
        for text in ("shift:1", "affine:3", "elastic:1+elastic:2", "twirl:1")
    ),
    BadInput(
        "train: --metric-context with the head read-out",
        _train("--task", "meta", "--readout", "head", "--metric-context"),
        2,
    ),
    *(
        BadInput(f"train: --transductive-weight {case}", _train(*argv), 2)
        for case, argv in (
            ("with the head read-out", (*_META_HEAD, "--transductive-weight", "1")),
            (
                "for a ProtoNet",
                ("--task", "meta", "--model", "protonet", "--transductive-weight", "1"),
            ),
            ("-1", ("--task", "meta", "--transductive-weight", "-1")),
        )
    ),
    BadInput(
        "train: --no-head-context for sinusoids",
        _train("--task", "meta", "--dataset", "sinusoid", "--no-head-context"),
        2,
    ),
    BadInput("train: missing --data", _train("--data", "{t}/nothing"), 2),
    BadInput("train: empty data folder", _train("--data", "{t}/empty", "--out", "{t}/run"), 2),
    BadInput("train: width not a multiple of 8", _train("--width", "12"), 2),
    BadInput("train: zero epochs", _train("--epochs", "0"), 2),
    BadInput("train: --resume with nothing to resume", _train("--resume", "--out", "{t}/none"), 2),
    BadInput(
        "train: --init with another kind of model",
        _train("--init", "{t}/classifier.safetensors", "--out", "{t}/init"),
        2,
    ),
    BadInput(
        "train: --init with a truncated checkpoint",
        _train("--init", "{t}/truncated.safetensors", "--out", "{t}/init"),
        1,
    ),
    BadInput("train: negative --seed", _train("--seed", "-1"), 2),
    BadInput("attack: --eps divides by zero", _attack("--eps", "8/0"), 2),
    BadInput("attack: negative --eps", _attack("--eps", "-1"), 2),
    BadInput("attack: --eps not a number", _attack("--eps", "abc"), 2),
    BadInput("attack: L∞ --eps above 1", _attack("--eps", "2", "--norm", "linf"), 2),
    BadInput("attack: unknown --norm", _attack("--norm", "l3"), 2),
    BadInput("attack: unknown --method", _attack("--method", "autoattack"), 2),
    BadInput("attack: --apgd-steps 0", _attack("--method", "apgd", "--apgd-steps", "0"), 2),
    BadInput("attack: --apgd-restarts 0", _attack("--apgd-restarts", "0"), 2),
    BadInput(
        "attack: generative checkpoint",
        lambda t: ["attack", "-c", str(MODEL), "--device", "cpu"],
        2,
    ),
    BadInput("attack: labels beyond the classes", _attack("--data", "{t}/labels_12.npz"), 2),
    BadInput("attack: empty data folder", _attack("--data", "{t}/empty"), 2),
    BadInput("attack: unlabelled images", _attack("--data", "{t}/flat"), 2),
    BadInput(
        "train: adversarial with --inner naive",
        _train("--task", "adversarial", "--inner", "naive"),
        2,
    ),
    BadInput(
        "train: adversarial with a bad --eps", _train("--task", "adversarial", "--eps", "1/0"), 2
    ),
    BadInput(
        "sample: checkpoint of another task",
        lambda t: ["sample", "-c", str(t / "classifier.safetensors"), "--device", "cpu"],
        2,
    ),
    BadInput(
        "adapt: a support class with no images",
        _adapt("--support", "{t}/support_empty_class", "--query", "{t}/query_empty"),
        2,
    ),
    BadInput(
        "adapt: a Prototypical Network as the meta-model",
        lambda t: ["adapt", "-c", str(t / "protonet.safetensors"), "--episodes", "2"],
        2,
    ),
    BadInput(
        "adapt: --baseline that is not a Prototypical Network",
        _adapt("--episodes", "2", "--baseline", "{t}/meta.safetensors"),
        2,
    ),
    BadInput("adapt: unknown --episode-kind", _adapt("--episodes", "2", "--episode-kind", "x"), 2),
    BadInput(
        "train: unknown --episode-kinds",
        _train("--task", "meta", "--episode-kinds", "across,sideways"),
        2,
    ),
    BadInput(
        "train: --dataset omniglot without --data",
        _train("--task", "meta", "--dataset", "omniglot"),
        2,
    ),
    BadInput(
        "train: Omniglot --data that is neither an archive nor a folder",
        _train("--task", "meta", "--dataset", "omniglot", "--data", "{t}/junk.png"),
        2,
    ),
    BadInput(
        "adapt: empty query folder",
        _adapt("--support", "{t}/support_good", "--query", "{t}/query_empty"),
        2,
    ),
    BadInput("adapt: more ways than classes", _adapt("--episodes", "5", "--ways", "300"), 2),
    BadInput("adapt: neither folders nor --episodes", _adapt(), 2),
    BadInput(
        "adapt: the read-out solves did not converge (their budget too small)",
        _adapt(
            *("--episodes", "2", "--ways", "2", "--queries", "1", "--iterations", "4"),
            *("--forward-iterations", "1", "--json"),
        ),
        1,
    ),
    *(
        BadInput(f"adapt: {case}", command("--episodes", n, "--soft-kmeans-steps", steps), 2)
        for case, command, n, steps in (
            ("--soft-kmeans-steps with the head read-out", _adapt, "2", "3"),
            ("negative --soft-kmeans-steps", _adapt, "2", "-1"),
            ("sinusoid with --soft-kmeans-steps", _sinusoid, "4", "3"),
        )
    ),
    BadInput("adapt: sinusoid without --episodes", _sinusoid(), 2),
    BadInput("adapt: sinusoid with --ways", _sinusoid("--episodes", "4", "--ways", "3"), 2),
    BadInput("adapt: sinusoid with zero shots", _sinusoid("--episodes", "4", "--shots", "0"), 2),
    BadInput(
        "adapt: glyph model for sinusoid tasks",
        _sinusoid("--episodes", "4", model=GLYPH_META_MODEL),
        2,
    ),
    BadInput(
        "adapt: sinusoid model for glyph episodes",
        lambda t: ["adapt", "-c", str(SINUSOID_MODEL), "--episodes", "4", "--device", "cpu"],
        2,
    ),
    BadInput(
        "train: sinusoid with --ways",
        _train("--task", "meta", "--dataset", "sinusoid", "--ways", "5", "--out", "{t}/sin"),
        2,
    ),
    BadInput(
        "train: meta with more ways than classes", _train("--task", "meta", "--ways", "900"), 2
    ),
    BadInput("train: meta with a malformed --ways", _train("--task", "meta", "--ways", "5,x"), 2),
    BadInput("train: --max-bad-steps 0", _train("--max-bad-steps", "0"), 2),
    BadInput("bench: --repeat 0", _bench("engine", "--repeat", "0"), 2),
    BadInput("bench: malformed --sizes", _bench("engine", "--sizes", "64x64"), 2),
    BadInput("bench: engine channels not a multiple of 8", _bench("engine", "--channels", "4"), 2),
    BadInput("bench: --x-weight 0", _bench("adapt", "--x-weight", "0"), 2),
    BadInput("bench: --x-weight for the attack bench", _bench("attack", "--x-weight", "10"), 2),
    BadInput("bench: unknown attack --baseline", _bench("attack", "--baseline", "fgsm"), 2),
    BadInput("bench: --baseline for another task", _bench("adapt", "--baseline", "apgd"), 2),
    BadInput("bench: an option of another task", _bench("adapt", "--eps", "0.3"), 2),
    BadInput("bench: unknown --precision", _bench("engine", "--precision", "fp8"), 2),
]
