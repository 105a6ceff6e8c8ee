"""``jiio train --nproc N``: start N training processes on this machine through torchrun.

The command line is replayed as ``python -m torch.distributed.run --standalone
--nproc-per-node N -m jiio_cli <the same arguments without --nproc>``, in this process.
Only local rank 0 writes to the terminal; the other ranks' output goes to log files, so
a mistake every rank finds is reported once. A failure becomes jiio's usual exit status
and one line instead of torchrun's report.
"""

from __future__ import annotations

import logging
import sys
import tempfile

from jiio_cli.errors import JiioError, UsageError

__all__ = ["launch_workers", "torchrun_arguments", "without_nproc"]


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` minus ``--nproc N`` / ``--nproc=N`` (the workers must not launch again)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_arguments(nproc: int, argv: list[str], log_dir: str) -> list[str]:
    """torchrun's argument list for ``nproc`` local workers running ``jiio <argv>``."""
    quiet = ",".join(f"{rank}:3" for rank in range(1, nproc))
    redirects = ["--log-dir", log_dir, "--redirects", quiet] if quiet else []
    return [
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        *redirects,
        "-m",
        "jiio_cli",
        *without_nproc(argv),
    ]


def launch_workers(nproc: int, argv: list[str]) -> int:
    """Run ``jiio <argv>`` on ``nproc`` processes; returns the exit status to give.

    Raises:
        UsageError: for ``nproc`` < 1.
        JiioError: when a rank other than 0 fails alone (its log file is named).
    """
    if nproc < 1:
        raise UsageError(f"invalid --nproc {nproc}: need at least 1 process")
    # Imported here: the launcher is rarely used and torch.distributed.run is slow to load.
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    # torchrun logs every worker failure with its own traceback; rank 0 already said why.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    log_dir = tempfile.mkdtemp(prefix="jiio-workers-")
    try:
        torchrun_main(torchrun_arguments(nproc, argv, log_dir))
    except ChildFailedError as exc:
        failures = exc.failures
        if 0 in failures:
            return failures[0].exitcode if failures[0].exitcode > 0 else 1
        rank, failure = min(failures.items())
        raise JiioError(
            f"training process of rank {rank} failed with exit status {failure.exitcode}; "
            f"its output is in {log_dir}"
        ) from None
    except SignalException:
        raise KeyboardInterrupt from None
    finally:
        sys.stdout.flush()
    return 0
