"""History loads against the per-day backfill, under the real scheduler and triggerer, counted at the emulator.

The history stack unpauses the ``voucherify_<object>_history`` DAGs and lets them catch up on the year
(monthly exports, the documented first step); the snapshot object gets the one run of its daily DAG it
needs. The per-day stack backfills the daily DAGs over the first ``daily_days`` days of the same data:
a backfill of a whole year is 2,555 runs (hours here), so its API calls and wall time are extrapolated
linearly per day, its stack start-up counted once (runs are independent: each day costs the same calls,
and the backfill's throughput is steady once the stack runs). The partitions both land for those days are
compared id for id. Then the landing's peak memory for a 30-day export against a one-day one.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from harness.paths import EXAMPLE_DAGS
from harness.process import run_engine
from harness.stack import AirflowStack, EmulatorProcess, wait_until
from voucherify_provider import catalog

FIRST = date(2024, 1, 1)
STATES_DONE = ("success", "failed")


def history_vs_daily(objects: list[str], months: int, daily_days: int, rows_per_day: int, work: Path,
                     poll_interval: float = 5.0, export_seconds: float = 2.0,
                     export_rows_per_second: float = 20_000) -> dict[str, Any]:
    """Load ``months`` months of ``objects`` by history DAGs and ``daily_days`` days by the per-day backfill."""
    end = _months_after(FIRST, months)
    args = ["--start", FIRST.isoformat(), "--end", end.isoformat(), "--in-progress-seconds", str(export_seconds),
            "--export-rows-per-second", str(export_rows_per_second), "--chunk-rows", "200000"]
    days = (end - FIRST).days
    with EmulatorProcess(work, scale=rows_per_day * days, extra_args=args) as emulator:
        history = _history_run(emulator, objects, end, work, poll_interval)
        emulator.admin("POST", "reset")
        daily = _daily_run(emulator, objects, daily_days, work, poll_interval)
    per_day_calls = daily["api_calls"] / daily_days
    per_day_wall = (daily["wall_seconds"] - daily["startup_seconds"]) / daily_days
    extrapolated = {"api_calls": per_day_calls * days, "exports": daily["exports"] / daily_days * days,
                    "wall_seconds": daily["startup_seconds"] + per_day_wall * days}
    return {
        "objects": objects, "days": days, "daily_days": daily_days, "rows_per_day": rows_per_day,
        "poll_interval_s": poll_interval,
        "export_seconds": export_seconds, "export_rows_per_second": export_rows_per_second,
        "history": history, "per_day_measured": daily, "per_day_extrapolated": extrapolated,
        "exports_per_object_max": max(history["exports_by_object"].values()),
        "api_call_ratio": history["api_calls"] / extrapolated["api_calls"],
        "wall_ratio": history["wall_seconds"] / extrapolated["wall_seconds"],
        "partitions_compared": _compare(work / "history-warehouse", work / "daily-warehouse", objects, daily_days),
    }


def _months_after(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    return date(day.year + year, month + 1, 1)


def _env(emulator: EmulatorProcess, warehouse: Path, objects: list[str], poll_interval: float) -> dict[str, str]:
    return {"AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(), "VOUCHERIFY_DESTINATION": str(warehouse),
            "VOUCHERIFY_OBJECTS": ",".join(objects), "VOUCHERIFY_POLL_INTERVAL": str(poll_interval),
            "VOUCHERIFY_MAX_ACTIVE_RUNS": "4", "VOUCHERIFY_RETRY_DELAY": "10"}


def _history_run(emulator: EmulatorProcess, objects: list[str], end: date, work: Path,
                 poll_interval: float) -> dict[str, Any]:
    """The history DAGs, unpaused, catch up on [FIRST, end); a snapshot object's daily DAG runs once."""
    home, warehouse = _fresh(work, "history")
    env = {**_env(emulator, warehouse, objects, poll_interval), "VOUCHERIFY_HISTORY": "true",
           "VOUCHERIFY_HISTORY_START": FIRST.isoformat(), "VOUCHERIFY_START_DATE": end.isoformat(),
           "VOUCHERIFY_END_DATE": end.isoformat()}
    history_dags = [f"voucherify_{o}_history" for o in objects if catalog.get_object(o).windowable]
    snapshots = [f"voucherify_{o}" for o in objects if not catalog.get_object(o).windowable]
    airflow = AirflowStack(home, EXAMPLE_DAGS, env)
    airflow.prepare(pools={"voucherify_api": 4})
    for dag_id in history_dags:  # created paused, whatever the deployment's default: the user unpauses them
        airflow.cli("dags", "unpause", dag_id)
    backfills = [airflow.backfill(dag_id, end.isoformat(), end.isoformat()) for dag_id in snapshots]
    started = time.monotonic()
    with airflow:
        startup = time.monotonic() - started
        months = _months(end)
        wait_until(lambda: _caught_up(airflow, history_dags, months + 1), 7200, "the history DAGs to catch up",
                   interval=5)
        if backfills:
            airflow.wait_for_backfills(backfills, timeout=1800)
        wall = time.monotonic() - started
        runs = airflow.query("SELECT dag_id, state FROM dag_run")
    return {**_counted(emulator, warehouse), "wall_seconds": wall, "startup_seconds": startup,
            "runs": dict(Counter(f"{dag}:{state}" for dag, state in runs))}


def _months(end: date) -> int:
    return (end.year - FIRST.year) * 12 + end.month - FIRST.month


def _caught_up(airflow: AirflowStack, dag_ids: list[str], runs: int) -> bool:
    """Every history DAG has ``runs`` finished runs (its intervals and the skipped one after) and none left."""
    airflow.check_alive()
    marks = ",".join("?" * len(dag_ids))
    rows = airflow.query(f"SELECT dag_id, state FROM dag_run WHERE dag_id IN ({marks})", dag_ids)
    done = Counter(dag for dag, state in rows if state in STATES_DONE)
    return all(done[d] >= runs for d in dag_ids) and all(state in STATES_DONE for _, state in rows)


def _daily_run(emulator: EmulatorProcess, objects: list[str], days: int, work: Path,
               poll_interval: float) -> dict[str, Any]:
    """The per-day backfill of the daily DAGs over the first ``days`` days."""
    home, warehouse = _fresh(work, "daily")
    last = FIRST + timedelta(days=days - 1)
    env = {**_env(emulator, warehouse, objects, poll_interval), "VOUCHERIFY_START_DATE": FIRST.isoformat(),
           "VOUCHERIFY_END_DATE": last.isoformat()}
    airflow = AirflowStack(home, EXAMPLE_DAGS, env)
    airflow.prepare(pools={"voucherify_api": 4})
    backfills = [airflow.backfill(f"voucherify_{o}", FIRST.isoformat(), last.isoformat()) for o in objects]
    started = time.monotonic()
    with airflow:
        startup = time.monotonic() - started
        states = airflow.wait_for_backfills(backfills, timeout=7200)
        wall = time.monotonic() - started
    return {**_counted(emulator, warehouse), "wall_seconds": wall, "startup_seconds": startup,
            "runs": dict(Counter(s[2] for s in states))}


def _fresh(work: Path, name: str) -> tuple[Path, Path]:
    home, warehouse = work / f"{name}-airflow", work / f"{name}-warehouse"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(warehouse, ignore_errors=True)
    return home, warehouse


def _counted(emulator: EmulatorProcess, warehouse: Path) -> dict[str, Any]:
    """API calls (downloads apart) and exports per object, from the emulator; rows landed."""
    log = emulator.admin("GET", "requests")["log"]
    routes = Counter(entry["route"] for entry in log)
    exports = emulator.exports()
    manifests = [json.loads(p.read_text()) for p in warehouse.glob("*/window_start=*/_manifest.json")]
    return {"api_calls": sum(n for route, n in routes.items() if route != "download_export"),
            "downloads": routes.get("download_export", 0), "calls_by_route": dict(routes),
            "exports": len(exports), "exports_by_object": dict(Counter(e["exported_object"] for e in exports)),
            "partitions": len(manifests), "rows_landed": sum(m["rows"] for m in manifests)}


def _compare(history: Path, daily: Path, objects: list[str], days: int) -> dict[str, Any]:
    """The partitions both stacks landed for the per-day days: equal id sets and row counts, or not."""
    import pyarrow.dataset as ds

    compared, unequal = 0, []
    for name in objects:
        obj = catalog.get_object(name)
        if not obj.windowable:
            continue  # a snapshot's partition is named by its run, not by a day of history
        for k in range(days):
            stamp = f"window_start={(FIRST + timedelta(days=k)).strftime('%Y%m%d')}T000000Z"
            a, b = history / name / stamp, daily / name / stamp
            ids = [sorted(ds.dataset(str(p), format="parquet").to_table(columns=[obj.key_field])
                          .column(0).to_pylist()) for p in (a, b)]
            compared += 1
            if ids[0] != ids[1]:
                unequal.append(f"{name}/{stamp}")
    return {"compared": compared, "unequal": unequal}


def landing_memory(rows_per_day: int, runs: int, work: Path) -> dict[str, Any]:
    """Peak RSS of the landing task's process for one export of 1 day and of 30 days (split into days)."""
    args = ["--start", FIRST.isoformat(), "--end", (FIRST + timedelta(days=30)).isoformat(),
            "--in-progress-seconds", "0.1", "--export-cache-dir", str(work / "history-export-cache")]
    with EmulatorProcess(work, scale=rows_per_day * 30, extra_args=args) as emulator:
        env = {"BENCH_API_URL": emulator.base_url, "BENCH_APP_ID": emulator.app_id,
               "BENCH_APP_TOKEN": emulator.app_token}
        reports = {days: [run_engine("land_span", str(days), env) for _ in range(runs)] for days in (1, 30)}
    peak = {days: statistics.median(r["peak_rss_mb"] for r in found) for days, found in reports.items()}
    return {"rows_per_day": rows_per_day, "runs": runs,
            "rows": {days: found[0]["rows"] for days, found in reports.items()},
            "seconds": {days: statistics.median(r["seconds"] for r in found) for days, found in reports.items()},
            "peak_rss_mb": peak, "rss_ratio_30_to_1": peak[30] / peak[1]}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 20's targets against this run's figures."""
    found = [("exports per object for the year (history)", result["load"]["exports_per_object_max"], 13),
             ("API calls, history / per-day backfill", result["load"]["api_call_ratio"], 0.05),
             ("wall time, history / per-day backfill", result["load"]["wall_ratio"], 0.2),
             ("landing peak RSS, 30-day / 1-day export", result["memory"]["rss_ratio_30_to_1"], 1.5),
             ("partitions differing from the per-day backfill", len(result["load"]["partitions_compared"]["unequal"]),
              0)]
    return [{"target": name, "measured": value, "limit": limit, "met": value <= limit} for name, value, limit in found]


def text(result: dict[str, Any]) -> str:
    """The section as the bench prints it."""
    load, memory = result["load"], result["memory"]
    history, measured, extrapolated = load["history"], load["per_day_measured"], load["per_day_extrapolated"]
    lines = [
        f"\nhistory load: {len(load['objects'])} objects, {load['days']} days, {load['rows_per_day']} redemptions/day "
        f"(exports take {load['export_seconds']} s + rows/{load['export_rows_per_second']:.0f}/s; polls every "
        f"{load['poll_interval_s']} s)",
        f"  history DAGs: {history['exports']} exports ({history['exports_by_object']}), {history['api_calls']} API "
        f"calls, {history['wall_seconds']:.0f} s, {history['partitions']} partitions, {history['rows_landed']} rows",
        f"  per-day backfill, measured over {load['daily_days']} day(s): "
        f"{measured['exports']} exports, {measured['api_calls']} API calls, {measured['wall_seconds']:.0f} s "
        f"(start-up {measured['startup_seconds']:.0f} s)",
        f"  per-day backfill, extrapolated to {load['days']} days: {extrapolated['exports']:.0f} exports, "
        f"{extrapolated['api_calls']:.0f} API calls, {extrapolated['wall_seconds']:.0f} s",
        f"  partitions compared id for id: {load['partitions_compared']['compared']}, unequal: "
        f"{load['partitions_compared']['unequal'] or 'none'}",
        f"  landing peak RSS: 1 day ({memory['rows'][1]} rows) {memory['peak_rss_mb'][1]:.0f} MB, 30 days "
        f"({memory['rows'][30]} rows) {memory['peak_rss_mb'][30]:.0f} MB",
    ]
    for check in result.get("targets") or []:
        lines.append(f"  {'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['measured']:.3g} "
                     f"(limit {check['limit']})")
    return "\n".join(lines)
