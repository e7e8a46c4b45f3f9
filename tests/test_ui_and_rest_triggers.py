"""Runs started from outside the schedule, on a running stack (scheduler, triggerer, dag-processor,
api-server): the UI's Trigger dialog submitted with its defaults and its Backfill option (Debian's
chromium driven by playwright-core), and REST runs without a logical date (no data interval), for the
windowed and the snapshot example DAG. Each must succeed and land exactly the emulator's ground truth."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from harness.paths import REPO_ROOT
from harness.running_stack import RunningStack, start_stack
from harness.stack import wait_until
from tests.support.warehouse_checks import landed
from voucherify_provider.window import partition_stamp

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(900)]

UI = REPO_ROOT / "tests" / "ui"
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[RunningStack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"))


def truth_ids(stack: RunningStack, obj: str, start: datetime, end: datetime) -> list[str]:
    answer = stack.emulator.admin("GET", "ground-truth", params={
        "object": obj, "start": start.isoformat(), "end": end.isoformat(), "ids": "true"})
    return sorted(answer["ids"])


def assert_window_landed(stack: RunningStack, start: datetime) -> None:
    """The redemption partition of [start, start + 1 day) holds exactly the records created then."""
    partitions = landed(stack.lake, "redemption")
    ids = partitions[f"window_start={partition_stamp(start)}"]
    assert ids and ids == truth_ids(stack, "redemption", start, start + DAY)


def drive_dialog(stack: RunningStack, tmp_path: Path, *args: str) -> dict[str, Any]:
    """Submit the Trigger dialog in the browser; return the API answer it got."""
    if not shutil.which("chromium") or not (UI / "node_modules" / "playwright-core").is_dir():
        pytest.skip("Debian's chromium or tests/ui/node_modules is missing: `make test` installs both "
                    "(apt-get install chromium; npm ci in tests/ui); installing them failed on this machine")
    mode, *rest = args
    done = subprocess.run(["node", str(UI / "trigger_dialog.mjs"), mode, stack.base_url, *rest[:1],
                           str(tmp_path / f"{mode}.png"), *rest[1:]], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200, answer
    return dict(answer)


def test_ui_trigger_with_the_defaults_lands_the_run(stack, tmp_path):
    answer = drive_dialog(stack, tmp_path, "single", "voucherify_redemption")
    assert answer["request"]["conf"] == {"destination": None, "lookback": 0}  # nothing was typed
    run = stack.wait_for_run("voucherify_redemption", answer["body"]["dag_run_id"])
    assert run["state"] == "success", stack.task_states("voucherify_redemption", run["dag_run_id"])
    start = datetime.fromisoformat(run["data_interval_start"])
    assert start == stack.today - DAY  # the dialog infers the interval of "now" from the timetable
    manifest = stack.xcom("voucherify_redemption", run["dag_run_id"], "land", map_index=0)
    assert manifest["window_start"] == start.isoformat() and manifest["rows"] > 0
    assert_window_landed(stack, start)


def test_ui_backfill_of_a_small_range_lands_each_day(stack, tmp_path):
    first = stack.today - 4 * DAY
    answer = drive_dialog(stack, tmp_path, "backfill", "voucherify_redemption",
                          first.strftime("%Y/%m/%d"), (first + DAY).strftime("%Y/%m/%d"))
    backfill_id = answer["body"]["id"]
    wait_until(lambda: stack.api("GET", f"backfills/{backfill_id}")["completed_at"], 600,
               f"backfill {backfill_id}", interval=2)
    runs = [r for r in stack.api("GET", "dags/voucherify_redemption/dagRuns", params={"limit": 100})["dag_runs"]
            if r["run_type"] == "backfill"]
    assert sorted((r["data_interval_start"], r["state"]) for r in runs) == [
        ((first + k * DAY).isoformat().replace("+00:00", "Z"), "success") for k in range(2)]
    for k in range(2):
        assert_window_landed(stack, first + k * DAY)


def test_rest_run_without_logical_date_lands_the_latest_complete_window(stack):
    created = stack.api("POST", "dags/voucherify_redemption/dagRuns", json={"logical_date": None})
    assert created["data_interval_start"] is None and created["logical_date"] is None
    run = stack.wait_for_run("voucherify_redemption", created["dag_run_id"])
    assert run["state"] == "success", stack.task_states("voucherify_redemption", run["dag_run_id"])
    windows = stack.xcom("voucherify_redemption", run["dag_run_id"], "windows")
    latest = stack.today - DAY  # the last complete @daily interval before the run
    assert windows == [{"window_start": latest.isoformat(), "window_end": stack.today.isoformat()}]
    assert_window_landed(stack, latest)


def test_rest_snapshot_without_logical_date_names_its_partition_from_run_after(stack):
    created = stack.api("POST", "dags/voucherify_points_expiration/dagRuns", json={"logical_date": None})
    run = stack.wait_for_run("voucherify_points_expiration", created["dag_run_id"])
    assert run["state"] == "success", stack.task_states("voucherify_points_expiration", run["dag_run_id"])
    stamp = partition_stamp(datetime.fromisoformat(run["run_after"]))
    manifest = stack.xcom("voucherify_points_expiration", run["dag_run_id"], "land")
    assert manifest["mode"] == "snapshot" and manifest["window_start"].startswith(run["run_after"][:19])
    partition = stack.lake / "points_expiration" / f"window_start={stamp}"
    expirations = ds.dataset(str(partition), format="parquet").to_table()
    assert expirations.num_rows == manifest["rows"] == stack.emulator.admin(
        "GET", "ground-truth", params={"object": "points_expiration"})["count"] > 0
