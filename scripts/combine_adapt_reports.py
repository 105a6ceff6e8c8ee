"""Combine ``jiio adapt --episodes --json`` reports of disjoint episode sets (other
``--seed``) into one: per method the mean accuracy over all episodes and its 95 %
interval, and the same for JIIO's paired differences, pooled exactly from each report's
count, mean and interval half-width (s = ci95 · √n / 1.96).

Usage: python scripts/combine_adapt_reports.py OUT.json IN.json [IN.json ...]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


def pooled(parts: list[tuple[int, float, float]]) -> dict[str, float]:
    """Mean and 95 % half-width of the union of samples given as (n, mean, ci95)."""
    total = sum(n for n, _, _ in parts)
    mean = sum(n * m for n, m, _ in parts) / total
    # Sum of squares about the pooled mean: within-part spread plus the parts' offsets.
    squares = sum(
        (n - 1) * (ci * math.sqrt(n) / 1.96) ** 2 + n * (m - mean) ** 2 for n, m, ci in parts
    )
    sd = math.sqrt(squares / (total - 1))
    return {"mean": mean, "ci95": 1.96 * sd / math.sqrt(total), "episodes": total}


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    first = reports[0]
    methods = [
        m for m in ("jiio", "naive", "centroid", "protonet", "protonet_soft_kmeans") if m in first
    ]
    out: dict[str, Any] = {
        k: first[k]
        for k in ("checkpoint", "baseline", "data", "episode_kind", "ways", "shots", "queries")
    }
    for key in ("transductive_weight", "soft_kmeans_steps", "protonet_soft_kmeans_steps"):
        if key in first:
            out[key] = first[key]
    out["seeds"] = [r["seed"] for r in reports]
    out["jiio_iterations"] = first["jiio_iterations"]
    for m in methods:
        acc = pooled([(r["episodes"], r[m]["accuracy"], r[m]["ci95"]) for r in reports])
        out[m] = {"accuracy": acc["mean"], "ci95": acc["ci95"]}
        for key in ("support_objective", "f_evals_per_task", "vjps_per_task", "seconds_per_task"):
            if key in first[m]:
                out[m][key] = sum(r[m][key] * r["episodes"] for r in reports) / acc["episodes"]
    out["paired"] = {
        key: pooled(
            [(r["episodes"], r["paired"][key]["mean"], r["paired"][key]["ci95"]) for r in reports]
        )
        for key in first["paired"]
    }
    out["residuals_max"] = {
        key: max(r["residuals"][key]["max"] for r in reports) for key in first["residuals"]
    }
    out["episodes"] = sum(r["episodes"] for r in reports)
    out["parts"] = reports
    return out


def main() -> None:
    out, *inputs = sys.argv[1:]
    reports = [json.loads(Path(p).read_text()) for p in inputs]
    Path(out).write_text(json.dumps(combine(reports), indent=1) + "\n")


if __name__ == "__main__":
    main()
