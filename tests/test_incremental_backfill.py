"""Incremental loads under the real scheduler and triggerer: three weeks of change windows for orders and
customers, while the emulator's data moves on (records created, updated several times, on window
boundaries, deleted), checked against the emulator's state with DuckDB and Spark."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from harness.paths import EXAMPLE_DAGS
from harness.stack import AirflowStack, EmulatorProcess
from tests.support.warehouse_checks import STATE_FIELDS as FIELDS
from tests.support.warehouse_checks import current, state_rows, truth_rows

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(1500)]

OBJECTS = ("order", "customer")
FIRST = date(2024, 1, 1)


def days(first: date, count: int) -> list[str]:
    return [(first + timedelta(days=k)).isoformat() for k in range(count)]


def partitions(warehouse: Path, obj: str, window_days: list[str]) -> dict[str, pa.Table]:
    """The change partition of each day, read through its manifest."""
    out = {}
    for day in window_days:
        folder = warehouse / obj / f"window_start={day.replace('-', '')}T000000Z"
        manifest = json.loads((folder / "_manifest.json").read_text())
        assert manifest["mode"] == "changes"
        out[day] = ds.dataset([str(folder / f["path"]) for f in manifest["files"]]).to_table()
    return out


def test_three_weeks_of_change_windows_land_each_change_once_and_keep_the_current_state(tmp_path):
    warehouse = tmp_path / "warehouse"
    weeks12, week3 = days(FIRST, 14), days(FIRST + timedelta(days=14), 7)
    with EmulatorProcess(tmp_path, scale=1200, extra_args=["--in-progress-seconds", "1"]) as emulator:
        env = {"AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(), "VOUCHERIFY_DESTINATION": str(warehouse),
               "VOUCHERIFY_OBJECTS": ",".join(OBJECTS), "VOUCHERIFY_START_DATE": weeks12[0],
               "VOUCHERIFY_END_DATE": week3[-1], "VOUCHERIFY_DEFERRABLE": "true", "VOUCHERIFY_POLL_INTERVAL": "1",
               "VOUCHERIFY_RETRY_DELAY": "2", "VOUCHERIFY_MAX_ACTIVE_RUNS": "4"}
        airflow = AirflowStack(tmp_path / "airflow", EXAMPLE_DAGS, env)
        airflow.prepare(pools={"voucherify_api": 4})

        # Weeks 1 and 2, backfilled on Jan 15: the data as it was then.
        emulator.admin("PATCH", "config", json={"data_clock": "2024-01-15T00:00:00Z"})
        backfills = [airflow.backfill(f"voucherify_{o}", weeks12[0], weeks12[-1]) for o in OBJECTS]
        with airflow:
            states = airflow.wait_for_backfills(backfills, timeout=1200)
        assert Counter(s[2] for s in states) == Counter({"success": len(OBJECTS) * 14}), states
        versions: dict[str, Counter[tuple[str, object]]] = {}
        for obj in OBJECTS:
            landed = partitions(warehouse, obj, weeks12)
            for index, day in enumerate(weeks12):
                end = (FIRST + timedelta(days=index + 1)).isoformat()
                truth = emulator.admin("GET", "ground-truth", params={
                    "object": obj, "start": f"{day}T00:00:00Z", "end": f"{end}T00:00:00Z", "ids": "true",
                    "placed_by": "last_change"})
                assert sorted(landed[day].column("id").to_pylist()) == sorted(truth["ids"]), (obj, day)
            versions[obj] = Counter((i, u) for t in landed.values()
                                    for i, u in zip(t.column("id").to_pylist(), t.column("updated_at").to_pylist(),
                                                    strict=True))
            assert max(versions[obj].values()) == 1  # no version of a record in two windows
            assert state_rows(current(warehouse, obj), FIELDS[obj]) == truth_rows(emulator, obj, FIELDS[obj]), obj
        boundary = [u for c in versions.values() for (_, u) in c if u is not None and u.hour == u.minute == 0
                    and u.second == 0 and u.microsecond == 0]
        assert boundary, "some records were updated exactly on a window boundary"
        before = {obj: {r[0] for r in state_rows(current(warehouse, obj), ["id"])} for obj in OBJECTS}

        # Week 3 a week later: more changes, and records landed earlier were deleted meanwhile; the run
        # whose interval reaches Monday Jan 22 lists every id and marks them.
        emulator.admin("PATCH", "config", json={"data_clock": "2024-01-22T00:00:00Z"})
        backfills = [airflow.backfill(f"voucherify_{o}", week3[0], week3[-1]) for o in OBJECTS]
        with airflow:
            states = airflow.wait_for_backfills(backfills, timeout=900)
        assert Counter(s[2] for s in states) == Counter({"success": len(OBJECTS) * 7}), states
        for obj in OBJECTS:
            table = current(warehouse, obj)
            assert state_rows(table, FIELDS[obj]) == truth_rows(emulator, obj, FIELDS[obj]), obj
            alive = {r[0] for r in truth_rows(emulator, obj, FIELDS[obj])}
            deleted = table.filter(pa.compute.field("_deleted"))
            assert sorted(deleted.column("id").to_pylist()) == sorted(before[obj] - alive), obj
        assert any(before[obj] - {r[0] for r in truth_rows(emulator, obj, FIELDS[obj])} for obj in OBJECTS), \
            "the emulator deleted some landed records in week 3"

        # Re-running any window, in any order, changes nothing in the current state.
        snapshot = {obj: current(warehouse, obj).sort_by("id") for obj in OBJECTS}
        again = [airflow.backfill(f"voucherify_{o}", weeks12[2], weeks12[3], "--reprocess-behavior", "completed")
                 for o in OBJECTS]
        with airflow:
            states = airflow.wait_for_backfills(again, timeout=600)
        assert Counter(s[2] for s in states) == Counter({"success": len(OBJECTS) * 2}), states
        for obj in OBJECTS:
            assert current(warehouse, obj).sort_by("id").equals(snapshot[obj]), obj
        spark_check(warehouse, emulator)


def spark_check(warehouse: Path, emulator: EmulatorProcess) -> None:
    """Spark reads the current-state table's live files (offline: no Delta jars) and agrees."""
    import shutil

    from deltalake import DeltaTable

    if not shutil.which("java"):
        pytest.fail("no Java on this machine: `make test` installs Debian's default-jre-headless; that failed here")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").appName("voucherify-current-state")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    try:
        for obj in OBJECTS:
            files = DeltaTable(str(warehouse / "current" / obj)).file_uris()
            frame = spark.read.parquet(*files).where("not _deleted")
            ids = sorted(r["id"] for r in frame.select("id").collect())
            assert ids == sorted(r[0] for r in truth_rows(emulator, obj, FIELDS[obj])), obj
    finally:
        spark.stop()
