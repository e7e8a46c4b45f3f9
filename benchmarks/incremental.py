"""Incremental vs snapshot: one daily run for ~1M orders, as the example DAG's tasks do it.

The emulator (its own process) holds ``records`` orders created evenly over ``days`` days, each changed
0-3 times in the following days, so about 1% of the records change on any day. The current-state table
is first built as of the day's start; then the day passes (the emulator's data clock) and one run of each
mode lands it: the change window (create, wait, land the changes, merge them into the Delta
current-state table) and the snapshot (create, wait, land every order). Counted at the emulator: API
calls and rows exported; timed: the run, in this process.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness.stack import EmulatorProcess

FIRST = date(2024, 1, 1)
CONN_ID = "voucherify_bench_incremental"


def incremental_vs_snapshot(records: int, days: int, work: Path) -> dict[str, Any]:
    """Per-run API calls, rows exported, rows landed and seconds, change window vs snapshot."""
    import os

    end = FIRST + timedelta(days=days)
    day = FIRST + timedelta(days=days - 1)  # the last day of creations: every record exists by its end
    window = (datetime(day.year, day.month, day.day, tzinfo=timezone.utc),
              datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1))
    cache = work / "incremental-export-cache"
    args = ["--start", FIRST.isoformat(), "--end", end.isoformat(), "--in-progress-seconds", "0.1",
            "--export-cache-dir", str(cache)]
    # SIZES: 0.5 orders per redemption, the emulator's scale unit.
    with EmulatorProcess(work, scale=records * 2, extra_args=args) as emulator:
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = emulator.connection()
        lake = work / "incremental-lake"
        shutil.rmtree(lake, ignore_errors=True)
        # The current-state table as a daily pipeline has it when the day begins (untimed set-up) ...
        emulator.admin("PATCH", "config", json={"data_clock": window[0].isoformat()})
        _seed_current_state(emulator, lake)
        # ... then the day passes, and each mode lands it.
        emulator.admin("PATCH", "config", json={"data_clock": window[1].isoformat()})
        changed = emulator.admin("GET", "ground-truth", params={
            "object": "order", "start": window[0].isoformat(), "end": window[1].isoformat(),
            "placed_by": "last_change"})["count"]
        results = {mode: _run(emulator, mode, window, lake) for mode in ("changes", "snapshot")}
    return {"records": records, "days": days, "window": [w.isoformat() for w in window],
            "records_changed_in_window": changed, "daily_change_ratio": changed / records, **results,
            "ratios": {k: results["changes"][k] / results["snapshot"][k]
                       for k in ("api_calls", "rows_exported", "seconds") if results["snapshot"][k]}}


def _run(emulator: EmulatorProcess, mode: str, window: tuple[datetime, datetime], lake: Path) -> dict[str, Any]:
    from voucherify_provider import catalog
    from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator
    from voucherify_provider.operators.export import VoucherifyCreateExportOperator
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    before = Counter(e["route"] for e in emulator.admin("GET", "requests")["log"])
    started = time.perf_counter()
    changes = mode == "changes"
    start, end = (window[0].isoformat(), window[1].isoformat()) if changes else (None, None)
    create = VoucherifyCreateExportOperator(task_id="export", exported_object="order", voucherify_conn_id=CONN_ID,
                                            fields=list(catalog.OBJECTS["order"].fields), incremental=changes,
                                            windowed=None if changes else False, window_start=start, window_end=end)
    request = create.plan({})
    export = create.hook.create_export("order", request["fields"], None, request["filters"])
    create.hook.wait_for_export(export["id"], poll_interval=0.2)
    land = VoucherifyDownloadToWarehouseOperator(task_id="land", export_id=export["id"], destination=str(lake / mode),
                                                 exported_object="order", voucherify_conn_id=CONN_ID,
                                                 window_start=start or window[0].isoformat(),
                                                 window_end=end or window[1].isoformat())
    manifest = land.execute({})
    merged: Any = None
    if changes:
        merged = VoucherifyMergeCurrentStateOperator(task_id="merge", landed=manifest, exported_object="order",
                                                     destination=str(lake / mode)).execute({})
    seconds = time.perf_counter() - started
    after = Counter(e["route"] for e in emulator.admin("GET", "requests")["log"])
    calls = after - before
    return {"seconds": seconds, "api_calls": sum(n for r, n in calls.items() if r != "download_export"),
            "downloads": calls.get("download_export", 0), "calls_by_route": dict(calls),
            "rows_exported": manifest["rows"] + manifest["rows_outside_window"], "rows_landed": manifest["rows"],
            "merge": merged}


def _seed_current_state(emulator: EmulatorProcess, lake: Path) -> None:
    """Land every order as it is at the data clock, one change window over all time, and merge it."""
    _run(emulator, "changes", (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)),
         lake)


def main() -> None:  # pragma: no cover - manual runs
    """``python -m benchmarks.incremental RECORDS DAYS WORK``: print the result as JSON."""
    import sys

    print(json.dumps(incremental_vs_snapshot(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])), indent=2))


if __name__ == "__main__":
    main()
