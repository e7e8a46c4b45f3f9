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

from benchmarks.api_economy import api_economy
from benchmarks.current_state import current_state_bench
from benchmarks.current_state import targets as current_state_targets
from benchmarks.current_state import text as current_state_text
from benchmarks.end_to_end import end_to_end, small_window
from benchmarks.history import history_vs_daily, landing_memory
from benchmarks.history import targets as history_targets
from benchmarks.history import text as history_text
from benchmarks.incremental import incremental_vs_snapshot
from benchmarks.inputs import make_redemption_csv
from benchmarks.privacy import hashing_cost
from benchmarks.privacy import text as privacy_text
from benchmarks.table_formats import table_formats
from harness.paths import REPO_ROOT as ROOT
from harness.process import run_engine
from voucherify_provider import catalog

ENGINES = ("provider", "provider_as_before", "pyarrow", "pandas", "duckdb", "polars")
SMALL_WINDOW_ROWS = 20_000


def landing(sizes: list[int], runs: int, work: Path) -> list[dict[str, Any]]:
    """Median wall time and peak RSS per engine and size; the engines' runs interleaved, so drift on the
    machine hits them alike."""
    results = []
    for size in sizes:
        csv_path = make_redemption_csv(work / f"redemption-{size}.csv", size)
        runs_of: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
        for _ in range(runs):
            for engine in ENGINES:
                runs_of[engine].append(run_engine(engine, csv_path))
        for engine, reports in runs_of.items():
            rows = {r["rows"] for r in reports}
            if rows != {size}:
                raise AssertionError(f"{engine} landed {rows} rows of {size}")
            results.append({"size": size, "engine": engine,
                            "seconds": statistics.median(r["seconds"] for r in reports),
                            "process_seconds": statistics.median(r["process_seconds"] for r in reports),
                            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in reports),
                            "file_mb": reports[0]["bytes"] / 1e6,
                            "runs": runs, "input_mb": csv_path.stat().st_size / 1e6})
    return results


def stages(size: int, runs: int, work: Path) -> dict[str, float]:
    """Where the landing's time goes at one size: the streaming parse alone, the writer alone (row groups,
    zstd, hash, commit, from batches already in memory), each median seconds in its own process."""
    csv_path = make_redemption_csv(work / f"redemption-{size}.csv", size)
    return {engine: statistics.median(run_engine(engine, csv_path)["seconds"] for _ in range(runs))
            for engine in ("parse_stage", "encode_stage")}


PARSE_PROBE = """
import runpy, sys, time
from airflow.sdk import DAG, BaseOperator, BaseSensorOperator, Asset, CronDataIntervalTimetable
before = set(sys.modules)
started = time.perf_counter()
{code}
seconds = time.perf_counter() - started
heavy = [m for m in ("pandas", "pyarrow", "httpx", "requests", "fastapi", "uvicorn")
         if m in sys.modules and m not in before]
print(seconds, ",".join(heavy) or "-", len(set(sys.modules) - before))
"""
BARE_DAG = """
from datetime import datetime
from airflow.sdk import DAG, task

with DAG("bare", schedule="@daily", start_date=datetime(2024, 1, 1)):
    @task
    def noop() -> None:
        pass

    noop()
"""


def parse_cost(runs: int, work: Path) -> dict[str, Any]:
    """What the provider adds to DAG parsing, each probe in a fresh process after the imports every DAG
    file makes (airflow.sdk): importing its DAG-facing modules, and parsing the example DAG file (7 DAGs)
    against a one-task DAG file without the provider. Also the heavy modules loaded at parse time."""
    bare_file = work / "bare_dag.py"
    bare_file.write_text(BARE_DAG)
    probes = {
        "provider_import": "import voucherify_provider.operators.export, voucherify_provider.sensors.export, "
                           "voucherify_provider.transfers.export_to_warehouse",
        "bare_dag_file": f"runpy.run_path({str(bare_file)!r})",
        "example_dag_file": f"runpy.run_path({str(ROOT / 'dags' / 'voucherify_exports.py')!r})",
    }
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "VOUCHERIFY_DESTINATION": str(work / "parse-probe")}
    out: dict[str, Any] = {}
    for name, code in probes.items():
        samples, heavy = [], ""
        for _ in range(runs):
            done = subprocess.run([sys.executable, "-c", PARSE_PROBE.format(code=code)], capture_output=True,
                                  text=True, cwd=ROOT, check=True, env=env)
            seconds, heavy, _modules = done.stdout.split()[-3:]
            samples.append(float(seconds))
        out[f"{name}_ms"] = statistics.median(samples) * 1000
        out[f"{name}_heavy"] = [] if heavy == "-" else heavy.split(",")
    out["added_ms"] = out["provider_import_ms"]
    out["heavy_modules_at_parse"] = sorted(set(out["provider_import_heavy"]) | set(out["example_dag_file_heavy"]))
    return out


def table(results: list[dict[str, Any]]) -> str:
    """Landing results as text, with ratios against baselines (d) polars, (b) pyarrow and (a) pandas."""
    lines = [f"{'rows':>9} {'engine':<19}{'seconds':>8}{'peak MB':>8}{'vs polars':>10}{'vs pyarrow':>11}"
             f"{'vs pandas':>10}{'process s':>10}{'file MB':>8}"]
    by = {(r["size"], r["engine"]): r for r in results}
    for r in results:
        d, b, a = (by[(r["size"], e)] for e in ("polars", "pyarrow", "pandas"))
        lines.append(f"{r['size']:>9} {r['engine']:<19}{r['seconds']:>8.2f}{r['peak_rss_mb']:>8.0f}"
                     f"{r['seconds'] / d['seconds']:>9.2f}x{r['seconds'] / b['seconds']:>10.2f}x"
                     f"{r['seconds'] / a['seconds']:>9.2f}x{r['process_seconds']:>10.2f}{r['file_mb']:>8.1f}")
    return "\n".join(lines)


def targets(landing_rows: list[dict[str, Any]], e2e: dict[str, Any], parse: dict[str, Any],
            window: dict[str, Any]) -> list[dict[str, Any]]:
    """Issues 11's and 23's targets against this run's figures: each measured value, its limit, met or not."""
    by = {(r["size"], r["engine"]): r for r in landing_rows}
    sizes = sorted({r["size"] for r in landing_rows})
    found: list[tuple[str, float, float]] = []
    for size in sizes:
        ours, polars = by[(size, "provider")], by[(size, "polars")]
        found += [(f"landing {size} rows: time / polars scan_csv + sink_parquet", ours["seconds"] / polars["seconds"],
                   1.0),
                  (f"landing {size} rows: file size / the writer as before", ours["file_mb"]
                   / by[(size, "provider_as_before")]["file_mb"], 1.1)]
        if size >= 2_000_000:
            found.append((f"landing {size} rows: peak RSS / polars", ours["peak_rss_mb"] / polars["peak_rss_mb"], 1.0))
        found += [(f"landing {size} rows: time / pyarrow one-shot", ours["seconds"] / by[(size, "pyarrow")]["seconds"],
                   1.0),
                  (f"landing {size} rows: time / pandas", ours["seconds"] / by[(size, "pandas")]["seconds"], 0.7),
                  (f"landing {size} rows: peak RSS MB", ours["peak_rss_mb"], 300)]
    found.append((f"landing: peak RSS {sizes[-1]} rows / {sizes[0]} rows",
                  by[(sizes[-1], "provider")]["peak_rss_mb"] / by[(sizes[0], "provider")]["peak_rss_mb"], 1.1))
    found.append(("end to end, whole processes: create+wait+land / (download, then pyarrow one-shot)",
                   e2e["overhead"], 1.1))
    found.append((f"a {window['rows']}-row window's landing task, execute to commit: seconds", window["seconds"], 0.5))
    found.append(("parse: ms added by the provider's DAG-facing modules", parse["added_ms"], 50))
    heavy = {"pandas", "pyarrow"} & set(parse["heavy_modules_at_parse"])
    found.append(("parse: pandas/pyarrow loaded", float(bool(heavy)), 0))
    return checked(found)


def api_targets(api: dict[str, Any]) -> list[dict[str, Any]]:
    """The backfill's API economy against its limits."""
    return checked([("API calls per window (backfill)", api["api_calls_per_window"], 5),
                    ("HTTP 429 answers (backfill)", api["http_429"], 0)])


def checked(found: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """Each (target, measured, limit) as a row saying whether it was met."""
    return [{"target": name, "measured": value, "limit": limit, "met": value <= limit} for name, value, limit in found]


def report_text(e2e: dict[str, Any], parse: dict[str, Any], window: dict[str, Any],
                checks: list[dict[str, Any]] | None) -> str:
    """The end-to-end, small-window and parse figures and, for a full run, the targets."""
    p, s, mb = e2e["process_seconds"], e2e["seconds"], e2e["peak_rss_mb"]
    ours, theirs = "pipeline", "download_then_pyarrow"
    lines = [
        f"\na {window['rows']}-row window ({window['file_mb']:.1f} MB CSV), the landing task from execute to commit: "
        f"{window['seconds']:.3f}s (whole process, start-up and the untimed export included: "
        f"{window['process_seconds']:.2f}s)",
        f"\nend to end, {e2e['rows']} rows ({e2e['file_mb']:.0f} MB CSV) from the emulator, whole processes "
        f"(in-process): create+wait+land {p[ours]:.2f}s ({s[ours]:.2f}s) / {mb[ours]:.0f} MB; download, then "
        f"pyarrow one-shot {p[theirs]:.2f}s ({s[theirs]:.2f}s) / {mb[theirs]:.0f} MB; ratio {e2e['overhead']:.2f}x "
        f"({e2e['overhead_in_process']:.2f}x)",
        f"parse (after airflow.sdk): provider's DAG-facing modules +{parse['provider_import_ms']:.0f} ms; "
        f"example DAG file (7 DAGs) {parse['example_dag_file_ms']:.0f} ms vs a one-task DAG file without the "
        f"provider {parse['bare_dag_file_ms']:.0f} ms; pandas/pyarrow at parse: "
        f"{', '.join(m for m in parse['heavy_modules_at_parse'] if m in ('pandas', 'pyarrow')) or 'none'} "
        f"(other modules loaded: {', '.join(parse['heavy_modules_at_parse']) or 'none'})",
    ]
    return "\n".join(lines + checks_text(checks))


def api_text(api: dict[str, Any], checks: list[dict[str, Any]] | None) -> str:
    """The backfill's API economy and, for a full run, its targets."""
    lines = [
        f"\nAPI economy, {api['windows']} windows, export latency {api['latency_s'][0]:g}-{api['latency_s'][1]:g}s, "
        f"{api['rate_limit_per_minute']} req/min: {api['runs_succeeded']}/{api['runs']} runs succeeded, "
        f"{api['api_calls_per_window']:.2f} API calls/window (+{api['downloads_per_window']:.2f} downloads), "
        f"{api['http_429']} x 429, rows {api['rows_landed']}/{api['rows_expected']}; by route {api['calls_by_route']}",
    ]
    return "\n".join(lines + checks_text(checks))


def checks_text(checks: list[dict[str, Any]] | None) -> list[str]:
    """Lines saying which targets were met (none for a smoke run)."""
    if not checks:
        return []
    return ["\ntargets:"] + [f"  {'met   ' if c['met'] else 'MISSED'} {c['target']}: {c['measured']:.2f} "
                              f"(limit {c['limit']:g})" for c in checks]


def incremental_text(inc: dict[str, Any], formats: list[dict[str, Any]]) -> str:
    """Change windows against snapshots, and the table formats' merges."""
    lines = [f"\nincremental vs snapshot, {inc['records']} orders, one daily run ({inc['window'][0][:10]}; "
             f"{inc['records_changed_in_window']} records changed that day = {inc['daily_change_ratio']:.1%}):"]
    for mode in ("changes", "snapshot"):
        r = inc[mode]
        lines.append(f"  {mode:9s} {r['api_calls']} API calls + {r['downloads']} download(s), "
                     f"{r['rows_exported']} rows exported, {r['rows_landed']} landed, {r['seconds']:.1f}s")
    lines.append("  changes/snapshot: " + ", ".join(f"{k} {v:.3f}x" for k, v in inc["ratios"].items()))
    lines.append("\ncurrent-state merge (1% changed: half updates, half new), median:")
    lines += [f"  {r['engine']:8s} {r['records']:>9d} records: {r['seconds']:.2f}s, peak RSS "
              f"{r['peak_rss_mb']:.0f} MB ({r['rss_before_merge_mb']:.0f} MB before the merge), "
              f"{r['rows_changed']} rows changed" for r in formats]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the tables, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run, no targets")
    parser.add_argument("--sizes", default="500000,2000000,8000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--e2e-rows", type=int, default=2_000_000)
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--sections", default="landing,privacy,api_economy,incremental,current_state,history",
                        help="landing (landing, stages, end to end, parse), api_economy (a backfill under the real "
                        "scheduler), incremental (change "
                        "windows vs snapshot, current-state table formats), current_state (merges, reconcile and "
                        "compaction at 1M-50M records), history (a year of history DAGs against the per-day "
                        "backfill, and the landing's memory for 30 days against one), privacy (the landing with "
                        "hashed columns against without)")
    parser.add_argument("--history-days", type=int, default=7,
                        help="days of the per-day backfill the history load is compared with (extrapolated)")
    parser.add_argument("--history-rows-per-day", type=int, default=2000, help="redemptions per day of history")
    parser.add_argument("--state-sizes", default="1000000,10000000,50000000")
    parser.add_argument("--legacy-sizes", default="1000000,10000000",
                        help="the previous release's delta-rs MERGE, for comparison (~0.35 GB per 1M records)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "voucherify-bench")
    args = parser.parse_args(argv)
    sizes = [2000, 5000] if args.smoke else [int(s) for s in args.sizes.split(",")]
    runs = 1 if args.smoke else args.runs
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections = set(args.sections.split(","))
    report: dict[str, Any] = {
        "command": "make bench" if not args.smoke else "python -m benchmarks.run --smoke",
        "when": datetime.now(timezone.utc).isoformat(), "smoke": args.smoke, "sections": sorted(sections),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "processor": platform.processor()},
    }
    if "landing" in sections:
        results = landing(sizes, runs, args.work)
        stage_size = sizes[len(sizes) // 2]
        stage_seconds = stages(stage_size, runs, args.work)
        e2e = end_to_end(3000 if args.smoke else args.e2e_rows, runs, args.work)
        window = small_window(2000 if args.smoke else SMALL_WINDOW_ROWS, runs, args.work)
        parse = parse_cost(1 if args.smoke else 7, args.work)
        checks = None if args.smoke else targets(results, e2e, parse, window)
        report.update({"landing": results, "stages": {"rows": stage_size, "seconds": stage_seconds},
                       "end_to_end": e2e, "small_window": window, "parse_cost": parse, "targets": checks})
    if "privacy" in sections:
        report["privacy"] = hashing_cost(5000 if args.smoke else sizes[len(sizes) // 2], runs, args.work)
    if "api_economy" in sections:
        if args.smoke:  # two windows, short exports, quick polls: the code path, not the figures
            api = api_economy(2, (1.0, 3.0), 100, args.work, {"VOUCHERIFY_POLL_INTERVAL": "1"})
        else:
            api = api_economy(args.windows, (2.0, 60.0), 100, args.work)
        api["targets"] = None if args.smoke else api_targets(api)
        report["api_economy"] = api
    if "incremental" in sections:
        report["incremental"] = incremental_vs_snapshot(2000 if args.smoke else 1_000_000,
                                                        20 if args.smoke else 180, args.work)
        report["table_formats"] = table_formats([20_000] if args.smoke else [1_000_000, 5_000_000], runs,
                                                args.work)
    if "current_state" in sections:
        state = current_state_bench([20_000] if args.smoke else [int(s) for s in args.state_sizes.split(",")],
                                    [20_000] if args.smoke else [int(s) for s in args.legacy_sizes.split(",")],
                                    runs, args.work, in_process=args.smoke)
        state["targets"] = None if args.smoke else current_state_targets(state)
        report["current_state"] = state
    if "history" in sections:
        if args.smoke:  # two months of two objects against two days: the code path, not the figures
            load = history_vs_daily(["redemption", "order"], 2, 2, 50, args.work, poll_interval=1.0,
                                    export_seconds=0.5)
            memory = landing_memory(200, 1, args.work)
        else:
            load = history_vs_daily(list(catalog.OBJECTS), 12, args.history_days, args.history_rows_per_day,
                                    args.work)
            memory = landing_memory(50_000, runs, args.work)
        report["history"] = {"load": load, "memory": memory}
        report["history"]["targets"] = None if args.smoke else history_targets(report["history"])
    report["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"bench-{'smoke-' if args.smoke else ''}{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    target.write_text(json.dumps(report, indent=2))
    if "landing" in sections:
        print(table(results))
        landed = next(r["seconds"] for r in results if r["size"] == stage_size and r["engine"] == "provider")
        before, polars = (next(r["seconds"] for r in results if r["size"] == stage_size and r["engine"] == e)
                          for e in ("provider_as_before", "polars"))
        print(f"stages at {stage_size} rows: parse alone {stage_seconds['parse_stage']:.2f}s, writer alone "
              f"{stage_seconds['encode_stage']:.2f}s, both overlapped in the landing {landed:.2f}s (with min/max "
              f"and a dictionary on every column, as before: {before:.2f}s); polars {polars:.2f}s")
        print(report_text(e2e, parse, window, checks))
    if "privacy" in sections:
        print(privacy_text(report["privacy"]))
    if "api_economy" in sections:
        print(api_text(report["api_economy"], report["api_economy"]["targets"]))
    if "incremental" in sections:
        print(incremental_text(report["incremental"], report["table_formats"]))
    if "current_state" in sections:
        print(current_state_text(report["current_state"]))
        for c in report["current_state"]["targets"] or []:
            print(f"  {'met   ' if c['met'] else 'MISSED'} {c['target']}: {c['measured']:.2f} (limit {c['limit']:g})")
    if "history" in sections:
        print(history_text(report["history"]))
    print(f"\nresults: {target} ({report['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
