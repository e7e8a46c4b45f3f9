"""History loads: one export over a long window lands exactly the daily partitions per-day runs land."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.exports import wait_done
from tests.support.operators import FakeStateStore, create, land
from voucherify_provider import catalog
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.spill import Spill
from voucherify_provider.window import Window

pytestmark = pytest.mark.unit
UTC = timezone.utc
JAN1, FEB1 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
DAYS = [JAN1 + timedelta(days=k) for k in range(31)]


def _context(start: datetime, end: datetime) -> dict[str, Any]:
    return {"data_interval_start": start, "data_interval_end": end, "task_state_store": FakeStateStore()}


def _export(hook: Any, name: str, start: datetime, end: datetime, **kwargs: Any) -> str:
    obj = catalog.get_object(name)
    export_id = create(exported_object=name, fields=list(obj.fields), incremental=obj.incremental,
                       **kwargs).execute(_context(start, end))
    wait_done(hook, export_id)
    return str(export_id)


def per_day(hook: Any, dest: Path, name: str, days: list[datetime]) -> None:
    """What a per-day backfill lands: one export and one landing per day."""
    for day in days:
        end = day + timedelta(days=1)
        land(dest, _export(hook, name, day, end), exported_object=name).execute(_context(day, end))


def history(hook: Any, dest: Path, name: str, **kwargs: Any) -> dict[str, Any]:
    """One export of January landed as its daily partitions."""
    export_id = _export(hook, name, JAN1, FEB1, **kwargs)
    return dict(land(dest, export_id, exported_object=name, partition_schedule="@daily").execute(
        _context(JAN1, FEB1)))


def partition(dest: Path, name: str, day: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A committed partition: its manifest and its rows (read through the manifest), in key order."""
    folder = dest / name / f"window_start={day.strftime('%Y%m%dT%H%M%SZ')}"
    manifest = json.loads((folder / "_manifest.json").read_text())
    table = pa.concat_tables([pq.read_table(folder / f["path"]) for f in manifest["files"]])
    key = catalog.get_object(name).key_field
    return manifest, sorted(table.to_pylist(), key=lambda row: str(row[key]))


SAME = ("exported_object", "mode", "placed_by", "window_start", "window_end", "fields", "schema", "rows")


@pytest.mark.parametrize("name", ["redemption", "order"])  # a created_at window, a change window
def test_history_lands_the_partitions_of_a_per_day_backfill(emu, hook, tmp_path, name):
    # Rows arrive newest first and in several chunk files: the landing cannot rely on their order.
    emu.configure(chunk_rows=70)
    per_day(hook, tmp_path / "daily", name, DAYS)
    summary = history(hook, tmp_path / "bulk", name, order="-created_at")

    assert [p["window_start"] for p in summary["partitions"]] == [d.isoformat() for d in DAYS]
    assert summary["rows"] > 0 and summary["mode"] == ("changes" if name == "order" else "window")
    landed_days = 0
    for day in DAYS:
        daily_manifest, daily_rows = partition(tmp_path / "daily", name, day)
        bulk_manifest, bulk_rows = partition(tmp_path / "bulk", name, day)
        assert bulk_rows == daily_rows, day  # id for id, value for value
        assert {k: bulk_manifest[k] for k in SAME} == {k: daily_manifest[k] for k in SAME}, day
        assert bulk_manifest["loaded_with"] == {"window_start": JAN1.isoformat(), "window_end": FEB1.isoformat()}
        landed_days += bool(bulk_rows)
    assert 5 <= landed_days < len(DAYS)  # rows on the emulator's days, empty partitions on the others
    visible = sorted(p.name for p in (tmp_path / "bulk" / name).rglob("*") if p.is_file())
    assert not [n for n in visible if n.startswith((".tmp-", "_commit"))]


def test_history_merges_its_partitions_into_the_current_state_in_one_pass(emu, hook, tmp_path):
    from deltalake import DeltaTable

    from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator

    def merge(dest: Path, landed: Any) -> list[dict[str, int]]:
        return VoucherifyMergeCurrentStateOperator(task_id="merge", landed=landed, exported_object="order",
                                                   destination=str(dest)).execute(_context(JAN1, FEB1))

    per_day(hook, tmp_path / "daily", "order", DAYS)
    daily = [json.loads((tmp_path / "daily" / "order" / f"window_start={d.strftime('%Y%m%dT%H%M%SZ')}"
                         / "_manifest.json").read_text()) for d in DAYS]
    for manifest, day in zip(daily, DAYS, strict=True):
        manifest["partition"] = str(tmp_path / "daily" / "order" / f"window_start={day.strftime('%Y%m%dT%H%M%SZ')}")
    merge(tmp_path / "daily", daily)
    counts = merge(tmp_path / "bulk", history(hook, tmp_path / "bulk", "order"))

    assert len(counts) == 1 and counts[0]["num_source_rows"] > 0  # one merge for the month's 31 partitions
    bulk_table = DeltaTable(str(tmp_path / "bulk" / "current" / "order"))
    assert len(bulk_table.history()) == 1 + 1  # the table's creation, then the one merge
    columns = ["id", "status", "amount", "updated_at", "_change_at", "_deleted"]

    def rows(path: Path) -> list[dict[str, Any]]:
        return sorted(DeltaTable(str(path)).to_pyarrow_table(columns=columns).to_pylist(), key=lambda r: r["id"])

    assert rows(tmp_path / "bulk" / "current" / "order") == rows(tmp_path / "daily" / "current" / "order")


def test_history_window_must_tile_the_daily_schedule():
    month = Window.of(JAN1, FEB1)
    assert [w.start for w in month.split("@daily")] == DAYS
    assert [w.end for w in month.split("0 0 * * *")][-1] == FEB1
    assert len(Window.of(JAN1, datetime(2025, 1, 1, tzinfo=UTC)).split("@monthly")) == 12
    with pytest.raises(VoucherifyConfigError, match=r"not an interval boundary of '@daily'.*midnight UTC"):
        Window.of(JAN1 + timedelta(hours=5), FEB1).split("@daily")
    with pytest.raises(VoucherifyConfigError, match=r"ends at .*not an interval boundary"):
        Window.of(JAN1, FEB1 + timedelta(hours=1)).split("@daily")
    with pytest.raises(VoucherifyConfigError, match=r"'every day' is not a cron expression.*'@daily'"):
        month.split("every day")


def test_history_landing_refuses_a_bad_schedule_at_parse_time(tmp_path):
    with pytest.raises(VoucherifyConfigError, match="'daily' is not a cron expression"):
        land(tmp_path, "exp_x", exported_object="order", partition_schedule="daily")


def test_spill_keeps_few_files_open_and_drops_a_file_read_again():
    schema = pa.schema([("day", pa.string()), ("n", pa.int64())])
    with Spill(schema, lambda batch: batch.column("day"), max_open=2) as spill:
        spill.add(pa.record_batch([pa.array(["b", "a", "c", "a"]), pa.array([1, 2, 3, 4])], schema=schema))
        spill.checkpoint()
        spill.add(pa.record_batch([pa.array(["c", "d"]), pa.array([5, 6])], schema=schema))
        spill.rollback()  # that input is read again: its rows must not land twice
        spill.add(pa.record_batch([pa.array(["d", "a", "e"]), pa.array([7, 8, 9])], schema=schema))
        assert len(spill._open) <= 2
        got = {p: [v for chunk in spill.chunks(p, 1) for v in chunk.column("n").to_pylist()]
               for p in spill.partitions()}
    assert got == {"a": [2, 4, 8], "b": [1], "c": [3], "d": [7], "e": [9]}


class _TaskInstance:
    """What staging_owner reads of a task instance: the same for every try of it."""

    dag_id, run_id, task_id, map_index = "voucherify_redemption_history", "backfill__2024-01-01", "land", -1


def _stamp(day: datetime) -> str:
    return f"window_start={day.strftime('%Y%m%dT%H%M%SZ')}"


def test_history_waits_for_a_daily_commit_of_its_day_and_never_mixes_it(emu, hook, tmp_path):
    import threading

    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.writer import CommitLock

    export_id = _export(hook, "redemption", JAN1, FEB1)
    jan3 = tmp_path / "redemption" / _stamp(DAYS[2])
    jan3.mkdir(parents=True)
    outcome: dict[str, Any] = {}

    def history_run() -> None:
        outcome["summary"] = land(tmp_path, export_id, exported_object="redemption",
                                  partition_schedule="@daily").execute(_context(JAN1, FEB1))

    with CommitLock(ObjectStoragePath(str(jan3)), "a-daily-run", timeout=5):  # a daily run mid-commit
        thread = threading.Thread(target=history_run)
        thread.start()
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while not (tmp_path / "redemption" / _stamp(DAYS[1]) / "_manifest.json").exists():
            assert datetime.now(UTC) < deadline, "the history run committed nothing"
            time.sleep(0.05)
        thread.join(1.0)
        assert thread.is_alive() and not (jan3 / "_manifest.json").exists()  # it waits for the lock
    thread.join(60)
    assert len(outcome["summary"]["partitions"]) == 31
    # A daily run of the same day lands while history is done: the partition holds one run's files, whole.
    daily = land(tmp_path, _export(hook, "redemption", DAYS[2], DAYS[3]), exported_object="redemption")
    daily.execute(_context(DAYS[2], DAYS[3]))
    manifest = json.loads((jan3 / "_manifest.json").read_text())
    assert sorted(p.name for p in jan3.iterdir()) == sorted([f["path"] for f in manifest["files"]] + ["_manifest.json"])


def test_a_failed_history_landing_keeps_its_committed_days_whole_and_its_retry_lands_them_all(
        emu, hook, tmp_path, monkeypatch):
    from voucherify_provider.landing.writer import PartitionWriter

    export_id = _export(hook, "redemption", JAN1, FEB1)
    context = {**_context(JAN1, FEB1), "ti": _TaskInstance()}
    commit, commits = PartitionWriter.commit, []

    def failing_commit(self: PartitionWriter, manifest: dict[str, Any]) -> dict[str, Any]:
        if len(commits) == 4:
            raise OSError("the destination went away")
        commits.append(self.partition)
        return commit(self, manifest)

    monkeypatch.setattr(PartitionWriter, "commit", failing_commit)
    with pytest.raises(OSError, match="went away"):
        land(tmp_path, export_id, exported_object="redemption", partition_schedule="@daily").execute(context)
    folder = tmp_path / "redemption"
    assert sorted(p.name for p in folder.iterdir() if (p / "_manifest.json").exists()) == [
        _stamp(d) for d in DAYS[:4]]
    assert not [p for p in folder.rglob("*") if p.name.startswith((".tmp-", "_commit"))]  # nothing half-landed

    monkeypatch.setattr(PartitionWriter, "commit", commit)
    summary = land(tmp_path, export_id, exported_object="redemption", partition_schedule="@daily").execute(context)
    per_day(hook, tmp_path / "daily", "redemption", DAYS)
    for day in DAYS:
        assert partition(tmp_path, "redemption", day)[1] == partition(tmp_path / "daily", "redemption", day)[1]
    assert sum(p["rows"] for p in summary["partitions"]) == summary["rows"] > 0


def test_a_retry_removes_the_spill_a_killed_try_left_on_the_worker():
    schema = pa.schema([("day", pa.string())])
    killed = Spill(schema, lambda batch: batch.column("day"), owner="0123456789ab")  # never closed: killed
    killed.add(pa.record_batch([pa.array(["a"])], schema=schema))
    left = killed._folder
    assert left.exists()
    with Spill(schema, lambda batch: batch.column("day"), owner="0123456789ab") as retry:
        assert not left.exists() and retry._folder.exists()
    with Spill(schema, lambda batch: batch.column("day"), owner="ffffffffffff") as other:
        assert other._max_open >= 16  # as many files as the process's descriptor limit allows
