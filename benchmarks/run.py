"""``make bench``: landing speed and memory against the alternatives, and DAG-parse cost, as ratios.

Every figure is measured in this invocation, on the same input, each engine in its own process
(several runs, median); results print as a table and are written to ``benchmarks/results/`` as JSON with
the machine's description. ``--smoke`` runs tiny sizes once, with no targets, so the code cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.inputs import make_redemption_csv

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("provider", "pyarrow", "pandas", "duckdb", "polars")


def run_engine(engine: str, csv_path: Path) -> dict[str, Any]:
    """One landing in a fresh process; its JSON report."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as out:
        done = subprocess.run([sys.executable, "-m", "benchmarks.engines", engine, str(csv_path), out],
                              capture_output=True, text=True, cwd=ROOT, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{engine} failed: {done.stderr[-2000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def landing(sizes: list[int], runs: int, work: Path) -> list[dict[str, Any]]:
    """Median wall time and peak RSS per engine and size."""
    results = []
    for size in sizes:
        csv_path = make_redemption_csv(work / f"redemption-{size}.csv", size)
        for engine in ENGINES:
            reports = [run_engine(engine, csv_path) for _ in range(runs)]
            rows = {r["rows"] for r in reports}
            if rows != {size}:
                raise AssertionError(f"{engine} landed {rows} rows of {size}")
            results.append({"size": size, "engine": engine,
                            "seconds": statistics.median(r["seconds"] for r in reports),
                            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in reports),
                            "runs": runs, "input_mb": csv_path.stat().st_size / 1e6})
    return results


def parse_cost(runs: int) -> dict[str, Any]:
    """Import time of the provider's DAG-facing modules over a bare DAG file, and heavy modules loaded."""
    # A DAG file without the provider still imports what any DAG file does.
    bare = "from airflow.sdk import DAG, BaseOperator, BaseSensorOperator, Asset, CronDataIntervalTimetable"
    ours = (bare + "; import voucherify_provider.operators.export, voucherify_provider.sensors.export, "
            "voucherify_provider.transfers.export_to_warehouse")
    probe = ("; import sys, time; t = time.perf_counter(); {code}; dt = time.perf_counter() - t; "
             "print(dt, ','.join(m for m in ('pandas', 'pyarrow', 'httpx', 'requests', 'fastapi', 'uvicorn') "
             "if m in sys.modules))")

    def measure(code: str) -> tuple[float, str]:
        samples, heavy = [], ""
        for _ in range(runs):
            out = subprocess.run([sys.executable, "-c", probe.format(code=code).lstrip("; ")], capture_output=True,
                                 text=True, cwd=ROOT, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
            seconds, heavy = out.stdout.split()[0], [*out.stdout.split(), ""][1]
            samples.append(float(seconds))
        return statistics.median(samples), heavy

    bare_s, bare_heavy = measure(bare)
    ours_s, heavy = measure(ours)
    added = sorted({m for m in heavy.split(",") if m} - {m for m in bare_heavy.split(",") if m})
    return {"bare_dag_import_s": bare_s, "provider_import_s": ours_s, "added_ms": (ours_s - bare_s) * 1000,
            "heavy_modules_at_parse": added}


def table(results: list[dict[str, Any]]) -> str:
    """Landing results as text, with ratios against baselines (b) pyarrow and (a) pandas."""
    lines = [f"{'rows':>9} {'engine':<9}{'seconds':>9}{'peak MB':>9}{'vs pyarrow':>11}{'vs pandas':>10}"]
    by = {(r["size"], r["engine"]): r for r in results}
    for r in results:
        b, a = by[(r["size"], "pyarrow")], by[(r["size"], "pandas")]
        lines.append(f"{r['size']:>9} {r['engine']:<9}{r['seconds']:>9.2f}{r['peak_rss_mb']:>9.0f}"
                     f"{r['seconds'] / b['seconds']:>10.2f}x{r['seconds'] / a['seconds']:>9.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run, no targets")
    parser.add_argument("--sizes", default="500000,2000000,8000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "voucherify-bench")
    args = parser.parse_args(argv)
    sizes = [2000, 5000] if args.smoke else [int(s) for s in args.sizes.split(",")]
    runs = 1 if args.smoke else args.runs
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = landing(sizes, runs, args.work)
    parse = parse_cost(1 if args.smoke else 5)
    report = {
        "command": "make bench" if not args.smoke else "python -m benchmarks.run --smoke",
        "when": datetime.now(timezone.utc).isoformat(), "smoke": args.smoke,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "processor": platform.processor()},
        "landing": results, "parse_cost": parse, "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"bench-{'smoke-' if args.smoke else ''}{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    target.write_text(json.dumps(report, indent=2))
    print(table(results))
    print(f"\nparse: bare DAG import {parse['bare_dag_import_s']:.3f}s, with the provider's DAG-facing modules "
          f"{parse['provider_import_s']:.3f}s (+{parse['added_ms']:.0f} ms); heavy modules the provider adds: "
          f"{parse['heavy_modules_at_parse'] or 'none'}")
    print(f"results: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
