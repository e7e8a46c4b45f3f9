"""End to end for one window: the operator path against a plain streamed download plus baseline (b).

The emulator renders the export file once into a cache directory and then serves it from disk, as the real
download host serves a stored file, so every timed run measures transfer and landing, not generation.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.inputs import FIELDS
from benchmarks.process import run_engine
from demo.stack import EmulatorProcess


def _ready_export(emulator: EmulatorProcess, copy: Path) -> str:
    """Create a full redemption export, wait for it, and download it once (renders the cached file)."""
    auth = {"X-App-Id": emulator.app_id, "X-App-Token": emulator.app_token}
    with httpx.Client(base_url=emulator.base_url, headers=auth, timeout=60) as client:
        created = client.post("/v1/exports", json={"exported_object": "redemption",
                                                   "parameters": {"fields": FIELDS}})
        created.raise_for_status()
        export_id = str(created.json()["id"])
        deadline = time.monotonic() + 60
        while (export := client.get(f"/v1/exports/{export_id}").json())["status"] != "DONE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"export {export_id} still {export['status']}")
            time.sleep(0.2)
        with client.stream("GET", export["result"]["url"], timeout=1800) as response, copy.open("wb") as out:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
    return export_id


def end_to_end(rows: int, runs: int, work: Path) -> dict[str, Any]:
    """Median seconds and peak RSS of operator, download and baseline (b); the overhead ratio."""
    cache, copy = work / f"e2e-cache-{rows}", work / f"e2e-{rows}.csv"
    shutil.rmtree(cache, ignore_errors=True)
    args = ["--in-progress-seconds", "0", "--export-cache-dir", str(cache)]
    try:
        with EmulatorProcess(work, scale=rows, extra_args=args) as emulator:
            export_id = _ready_export(emulator, copy)
            env = {"BENCH_API_URL": emulator.base_url, "BENCH_APP_ID": emulator.app_id,
                   "BENCH_APP_TOKEN": emulator.app_token}
            reports = {name: [run_engine(name, source, env) for _ in range(runs)]
                       for name, source in (("download", export_id), ("operator", export_id),
                                            ("pyarrow", str(copy)))}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    landed = {r["rows"] for r in reports["operator"]} | {r["rows"] for r in reports["pyarrow"]}
    if len(landed) != 1:
        raise AssertionError(f"operator and baseline (b) disagree on the row count: {landed}")
    sizes = {r["rows"] for r in reports["download"]}
    if sizes != {copy.stat().st_size}:
        raise AssertionError(f"downloads returned {sizes} bytes, the file has {copy.stat().st_size}")
    median = {name: statistics.median(r["seconds"] for r in rs) for name, rs in reports.items()}
    return {
        "rows": landed.pop(), "file_mb": copy.stat().st_size / 1e6, "runs": runs,
        "seconds": median,
        "peak_rss_mb": {name: statistics.median(r["peak_rss_mb"] for r in rs) for name, rs in reports.items()},
        "overhead": median["operator"] / (median["download"] + median["pyarrow"]),
    }
