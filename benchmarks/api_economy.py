"""API economy: a backfill of daily windows under the real scheduler and triggerer, counted at the emulator.

Exports take a seeded, uniformly spread time between ``latency`` bounds and the API allows
``rate_limit`` requests a minute; the example DAG runs with its defaults (deferrable sensor, doubling
poll interval). The emulator's request log gives the calls per window and the 429s.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from harness.paths import REPO_ROOT as ROOT
from harness.stack import AirflowStack, EmulatorProcess

DAG_ID = "voucherify_redemption"
FIRST = date(2024, 1, 1)


def api_economy(windows: int, latency: tuple[float, float], rate_limit: int, work: Path,
                dag_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Backfill ``windows`` days of redemptions; API calls per window, downloads, 429s, rows landed."""
    home, warehouse = work / "api-economy", work / "api-economy-warehouse"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(warehouse, ignore_errors=True)
    last = FIRST + timedelta(days=windows - 1)
    args = ["--start", FIRST.isoformat(), "--end", (last + timedelta(days=1)).isoformat(),
            "--in-progress-seconds", str(latency[0]), "--in-progress-seconds-max", str(latency[1]),
            "--rate-limit-per-minute", str(rate_limit)]
    with EmulatorProcess(work, scale=100 * windows, extra_args=args) as emulator:
        env = {"AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(), "VOUCHERIFY_DESTINATION": str(warehouse),
               "VOUCHERIFY_OBJECTS": "redemption", "VOUCHERIFY_START_DATE": FIRST.isoformat(),
               "VOUCHERIFY_END_DATE": last.isoformat(), "VOUCHERIFY_MAX_ACTIVE_RUNS": "10",
               "VOUCHERIFY_RETRY_DELAY": "10", **(dag_env or {})}
        airflow = AirflowStack(home, ROOT / "dags", env)
        airflow.prepare(pools={"voucherify_api": 4})
        backfill = airflow.backfill(DAG_ID, FIRST.isoformat(), last.isoformat())
        with airflow:
            states = airflow.wait_for_backfills([backfill], timeout=1500)
        log = emulator.admin("GET", "requests")["log"]
        truth = emulator.admin("GET", "ground-truth", params={"object": "redemption", "start": f"{FIRST}T00:00:00Z",
                                                              "end": f"{last + timedelta(days=1)}T00:00:00Z"})
    routes = Counter(entry["route"] for entry in log)
    api_calls = sum(n for route, n in routes.items() if route != "download_export")
    manifests = [json.loads(p.read_text()) for p in warehouse.glob("redemption/*/_manifest.json")]
    return {
        "windows": windows, "latency_s": list(latency), "rate_limit_per_minute": rate_limit,
        "runs_succeeded": sum(1 for s in states if s[2] == "success"), "runs": len(states),
        "api_calls": api_calls, "api_calls_per_window": api_calls / windows,
        "downloads_per_window": routes.get("download_export", 0) / windows,
        "calls_by_route": dict(routes), "http_429": sum(1 for entry in log if entry["status"] == 429),
        "partitions": len(manifests), "rows_landed": sum(m["rows"] for m in manifests),
        "rows_expected": truth["count"],
    }
