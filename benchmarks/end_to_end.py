"""End to end for one window: create, wait, download and land, against the hand-written task it replaces
(download the file, then pyarrow one-shot), each in its own process, timed from start to exit.

The emulator renders an export file once into a cache directory and serves it from disk afterwards (keyed
by what the file holds), as the real download host serves a stored file: every timed run measures the
export round trip, the transfer and the landing, not the emulator's generation.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.engines import bench_export_task
from harness.process import run_engine
from harness.stack import EmulatorProcess


def _window_request() -> dict[str, Any]:
    """The export request VoucherifyCreateExportOperator makes for the bench window."""
    request = bench_export_task().plan({})
    return {"exported_object": "redemption",
            "parameters": {"fields": request["fields"], "filters": request["filters"],
                           **({"order": request["order"]} if request["order"] else {})}}


def _ready_export(emulator: EmulatorProcess) -> str:
    """Create the window's export, wait for it, and download it once (renders the cached file)."""
    auth = {"X-App-Id": emulator.app_id, "X-App-Token": emulator.app_token}
    with httpx.Client(base_url=emulator.base_url, headers=auth, timeout=60) as client:
        created = client.post("/v1/exports", json=_window_request())
        created.raise_for_status()
        export_id = str(created.json()["id"])
        deadline = time.monotonic() + 60
        while (export := client.get(f"/v1/exports/{export_id}").json())["status"] != "DONE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"export {export_id} still {export['status']}")
            time.sleep(0.2)
        with client.stream("GET", export["result"]["url"], timeout=1800) as response:
            response.raise_for_status()
            for _ in response.iter_bytes(1 << 20):
                pass
    return export_id


@contextmanager
def bench_emulator(rows: int, work: Path) -> Iterator[tuple[str, float, dict[str, str]]]:
    """An emulator of ``rows`` redemptions whose exports are DONE at once and served from a file cache:
    the bench window's export id (downloaded once, so its file is cached), the file's MB, and the
    environment the engines find the emulator in."""
    cache = work / f"e2e-cache-{rows}"
    shutil.rmtree(cache, ignore_errors=True)
    args = ["--in-progress-seconds", "0", "--export-cache-dir", str(cache)]
    try:
        with EmulatorProcess(work, scale=rows, extra_args=args) as emulator:
            export_id = _ready_export(emulator)
            file_mb = sum(p.stat().st_size for p in cache.glob("*.csv")) / 1e6
            yield export_id, file_mb, {"BENCH_API_URL": emulator.base_url, "BENCH_APP_ID": emulator.app_id,
                                       "BENCH_APP_TOKEN": emulator.app_token}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def small_window(rows: int, runs: int, work: Path) -> dict[str, Any]:
    """A small window's landing task (``land_window``): median seconds from ``execute`` to the commit, and
    of the whole process (start, imports, the task runner's start-up, the export made untimed, exit)."""
    with bench_emulator(rows, work) as (_, file_mb, env):
        reports = [run_engine("land_window", "-", env) for _ in range(runs)]
    if {r["rows"] for r in reports} != {rows}:
        raise AssertionError(f"land_window landed {[r['rows'] for r in reports]} of {rows} rows")
    return {"rows": rows, "file_mb": file_mb, "runs": runs,
            "seconds": statistics.median(r["seconds"] for r in reports),
            "process_seconds": statistics.median(r["process_seconds"] for r in reports)}


def end_to_end(rows: int, runs: int, work: Path) -> dict[str, Any]:
    """Median seconds (whole process and in-process) and peak RSS of both; the ratios."""
    with bench_emulator(rows, work) as (export_id, file_mb, env):
        reports: dict[str, list[dict[str, Any]]] = {"pipeline": [], "download_then_pyarrow": []}
        for _ in range(runs):  # interleaved, so drift on the machine hits both alike
            for name in reports:
                reports[name].append(run_engine(name, export_id, env))
    landed = {r["rows"] for rs in reports.values() for r in rs}
    if len(landed) != 1:
        raise AssertionError(f"pipeline and baseline disagree on the row count: {landed}")

    def median(key: str) -> dict[str, float]:
        return {name: statistics.median(r[key] for r in rs) for name, rs in reports.items()}

    process, inner = median("process_seconds"), median("seconds")
    return {
        "rows": landed.pop(), "file_mb": file_mb, "runs": runs, "process_seconds": process, "seconds": inner,
        "peak_rss_mb": median("peak_rss_mb"),
        "overhead": process["pipeline"] / process["download_then_pyarrow"],
        "overhead_in_process": inner["pipeline"] / inner["download_then_pyarrow"],
    }
