"""What column policies cost: the landing with the redemption's personal-data policies (two columns hashed
with HMAC-SHA256) against the same landing without, same file, same run, each in its own process."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.inputs import make_redemption_csv
from harness.process import run_engine


def hashing_cost(size: int, runs: int, work: Path) -> dict[str, Any]:
    """Median seconds and peak RSS of the plain and the hashed landing, and their ratio."""
    csv_path = make_redemption_csv(work / f"redemption-{size}.csv", size)
    measured: dict[str, Any] = {"rows": size, "runs": runs, "hashed_columns": ["customer_name", "customer_source_id"]}
    for engine in ("provider", "provider_hashed"):
        reports = [run_engine(engine, csv_path) for _ in range(runs)]
        measured[engine] = {"seconds": statistics.median(r["seconds"] for r in reports),
                            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in reports)}
    measured["time_ratio"] = measured["provider_hashed"]["seconds"] / measured["provider"]["seconds"]
    measured["rss_ratio"] = measured["provider_hashed"]["peak_rss_mb"] / measured["provider"]["peak_rss_mb"]
    measured["per_hashed_value_us"] = ((measured["provider_hashed"]["seconds"] - measured["provider"]["seconds"])
                                       / (2 * size) * 1e6)
    return measured


def text(measured: dict[str, Any]) -> str:
    """The section's lines."""
    plain, hashed = measured["provider"], measured["provider_hashed"]
    return (f"\ncolumn policies at {measured['rows']} rows ({', '.join(measured['hashed_columns'])} hashed): "
            f"{hashed['seconds']:.2f}s against {plain['seconds']:.2f}s plain ({measured['time_ratio']:.2f}x, "
            f"{measured['per_hashed_value_us']:.2f} us per hashed value), peak RSS {hashed['peak_rss_mb']:.0f} "
            f"against {plain['peak_rss_mb']:.0f} MB ({measured['rss_ratio']:.2f}x)")
