"""The CSV parser and the Parquet writer on crafted files: types, errors, windows, atomic commits."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from tests.support.warehouse_checks import dictionary_encoded
from voucherify_provider import catalog
from voucherify_provider.landing.stream import IterStream
from voucherify_provider.landing.typed_csv import (
    BadExportFileError,
    NeedsDiagnosis,
    RejectedRows,
    TypedCsvReader,
    arrow_schema,
)
from voucherify_provider.landing.writer import MANIFEST, PartitionWriter, PartWriter, dictionary_columns
from voucherify_provider.window import Window

pytestmark = pytest.mark.unit

UTC = timezone.utc
REDEMPTION = catalog.get_object("redemption")
FIELDS = ["id", "date", "order_amount", "loyalty_points", "result", "metadata"]
HEADER = b"ID,Date,Order Amount,Loyalty Points,Result,Metadata\r\n"


def parse(data: bytes, fields=FIELDS, window=None, rejected=None, chunk=7):
    """Fast path first; like the operator, read again in diagnosing mode when it asks for it."""

    def stream():
        return IterStream(iter([data[i : i + chunk] for i in range(0, len(data), chunk)]))  # splits values too

    try:
        reader = TypedCsvReader(REDEMPTION, fields, window=window, rejected=rejected)
        batches = list(reader.batches(stream()))
    except NeedsDiagnosis:
        reader = TypedCsvReader(REDEMPTION, fields, window=window, rejected=rejected, diagnose=True)
        batches = list(reader.batches(stream()))
    return pa.Table.from_batches(batches, schema=reader.schema), reader.stats


def test_types_and_awkward_values():
    data = HEADER + (
        b'r_1,2024-01-01T00:00:00.000Z,2000,12,"SUC\r\nCESS","{""note"": ""a,b\\nc""}"\r\n'
        b"r_2,2024-01-01T10:11:12.345Z,2000.50,,FAILURE,\r\n"
        b"r_3,2024-01-01T23:59:59.999Z,-0.01,0,SUCCESS,{}\r\n"
    )
    table, stats = parse(data)
    assert table.schema.field("date").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("order_amount").type == pa.decimal128(20, 2)
    assert table.column("order_amount").to_pylist() == [Decimal("2000.00"), Decimal("2000.50"), Decimal("-0.01")]
    assert table.column("loyalty_points").to_pylist() == [12, None, 0]
    assert json.loads(table.column("metadata")[0].as_py()) == {"note": "a,b\nc"}
    assert table.column("result")[0].as_py() == "SUC\r\nCESS"  # a quoted line break stays in its value
    assert table.column("metadata")[1].as_py() is None
    assert stats.rows == 3


def test_boolean_date_and_non_ascii():
    obj = catalog.get_object("customer")
    data = "Name,Birthdate,Loyalty Points\r\nZoë Ñúñez,1990-02-03,5\r\n李,,\r\n".encode()
    reader = TypedCsvReader(obj, ["name", "birthdate", "loyalty_points"])
    table = pa.Table.from_batches(list(reader.batches(IterStream(iter([data])))), schema=reader.schema)
    assert table.column("name").to_pylist() == ["Zoë Ñúñez", "李"]
    assert str(table.column("birthdate")[0].as_py()) == "1990-02-03"


def test_fast_path_asks_for_diagnosis_on_a_bad_value():
    data = HEADER + b"r_1,not-a-date,12,1,SUCCESS,{}\r\n"
    with pytest.raises(NeedsDiagnosis):
        list(TypedCsvReader(REDEMPTION, FIELDS).batches(IterStream(iter([data]))))


def test_bad_value_names_row_column_and_value():
    data = HEADER + (b"r_1,2024-01-01T00:00:00.000Z,12,1,SUCCESS,{}\r\n"
                     b"r_2,2024-01-01T00:00:00.000Z,12.3.4,1,SUCCESS,{}\r\n")
    with pytest.raises(BadExportFileError, match=r"row 2, column 'order_amount' \(money\): cannot read '12.3.4'"):
        parse(data)


def test_bad_values_can_be_rejected_instead():
    data = HEADER + (b"r_1,2024-01-01T00:00:00.000Z,12,1,SUCCESS,{}\r\n"
                     b"r_2,yesterday,12,1,SUCCESS,{}\r\n"
                     b"r_3,2024-01-01T00:00:00.000Z,12,many,SUCCESS,{}\r\n")
    rejected = RejectedRows(FIELDS)
    table, stats = parse(data, rejected=rejected)
    assert table.column("id").to_pylist() == ["r_1"]
    assert [r[0] for r in rejected.rows] == ["r_2", "r_3"] and stats.rejected == 2
    assert "cannot read 'yesterday' as timestamp" in rejected.reasons[0]


def test_a_record_larger_than_the_read_block_still_lands():
    # Metadata of 3 MiB in one record: the fast path's 1 MiB blocks cannot hold it, the diagnosing path can.
    note = "x" * (3 << 20)
    data = HEADER + (b"r_1,2024-01-01T00:00:00.000Z,12,1,SUCCESS,{}\r\n"
                     + f'r_2,2024-01-01T00:00:01.000Z,1,2,SUCCESS,"{{""n"": ""{note}""}}"\r\n'.encode()
                     + b"r_3,2024-01-01T00:00:02.000Z,3,4,SUCCESS,{}\r\n")
    with pytest.raises(NeedsDiagnosis):
        list(TypedCsvReader(REDEMPTION, FIELDS).batches(IterStream(iter([data]))))
    table, _ = parse(data, chunk=1 << 16)
    assert table.column("id").to_pylist() == ["r_1", "r_2", "r_3"]
    assert len(json.loads(table.column("metadata")[1].as_py())["n"]) == 3 << 20


def test_wrong_column_count_is_explained():
    with pytest.raises(BadExportFileError, match="has 7 columns but the export has 6 fields"):
        parse(HEADER + b"r_1,2024-01-01T00:00:00.000Z,12,1,SUCCESS,{},extra\r\n")
    with pytest.raises(BadExportFileError, match=r"the header has 2 columns \(ID, Date\) but the export has 6"):
        parse(b"ID,Date\r\nr_1,2024-01-01T00:00:00.000Z\r\n")


def test_invalid_utf8_is_explained():
    with pytest.raises(BadExportFileError, match="not valid UTF-8"):
        parse(HEADER + b"r_\xff,2024-01-01T00:00:00.000Z,12,1,SUCCESS,{}\r\n")


def test_header_only_and_empty_files():
    table, stats = parse(HEADER)
    assert stats.rows == 0
    assert table.num_rows == 0 and table.schema == arrow_schema(REDEMPTION, FIELDS)
    with pytest.raises(BadExportFileError, match="empty: not even a header row"):
        parse(b"")


def test_window_keeps_half_open_interval():
    window = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    data = HEADER + (b"a,2023-12-31T23:59:59.999Z,1,1,SUCCESS,\r\n"
                     b"b,2024-01-01T00:00:00.000Z,1,1,SUCCESS,\r\n"
                     b"c,2024-01-01T23:59:59.999Z,1,1,SUCCESS,\r\n"
                     b"d,2024-01-02T00:00:00.000Z,1,1,SUCCESS,\r\n")
    table, stats = parse(data, window=window)
    assert table.column("id").to_pylist() == ["b", "c"] and stats.outside_window == 2


def test_writer_commits_atomically_and_replaces(tmp_path):
    schema = arrow_schema(REDEMPTION, FIELDS)
    partition = ObjectStoragePath(str(tmp_path / "redemption" / "window_start=20240101T000000Z"))
    partition.mkdir(parents=True, exist_ok=True)
    batch = pa.RecordBatch.from_pylist([{"id": "r_1", "result": "SUCCESS"}], schema=schema)

    first = PartitionWriter(partition, schema, metadata={"voucherify.export_id": "exp_1"})
    part = first.part("part-exp_1.parquet")
    part.write(batch)
    first.add(part.close())
    manifest = first.commit({"export_id": "exp_1"})
    assert manifest["rows"] == 1 and manifest["files"][0]["path"] == "part-exp_1.parquet"
    assert len(manifest["files"][0]["sha256"]) == 64

    import hashlib

    data = (tmp_path / "redemption" / "window_start=20240101T000000Z" / "part-exp_1.parquet").read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["files"][0]["sha256"]
    assert pq.read_schema(str(partition / "part-exp_1.parquet")).metadata[b"voucherify.export_id"] == b"exp_1"

    second = PartitionWriter(partition, schema, metadata={})
    for name in ("part-exp_2-0000.parquet", "part-exp_2-0001.parquet"):
        writer = second.part(name)
        writer.write(batch)
        second.add(writer.close())
    second.commit({"export_id": "exp_2"})
    names = sorted(p.name for p in partition.iterdir())
    assert names == [MANIFEST, "part-exp_2-0000.parquet", "part-exp_2-0001.parquet"]
    assert ds.dataset(str(tmp_path / "redemption"), partitioning="hive").to_table().num_rows == 2


def test_statistics_where_readers_prune_and_on_the_sort_column(tmp_path):
    """Typed columns carry min/max (readers prune row groups on them); free text does not, unless the file is
    sorted by it (the current-state table's key)."""
    schema = arrow_schema(REDEMPTION, FIELDS)
    batch = pa.RecordBatch.from_pylist(
        [{"id": "r_1", "date": datetime(2024, 1, 1, 3, tzinfo=UTC), "order_amount": Decimal("700.00"),
          "loyalty_points": 4, "result": "SUCCESS", "metadata": '{"a": 1}'}], schema=schema)
    for sorted_by in (None, "id"):
        part = PartWriter(ObjectStoragePath(str(tmp_path)), f"part-{sorted_by}.parquet", schema, {}, 10, "o",
                          sorted_by=sorted_by)
        part.write(batch)
        staged = tmp_path / part.close().staged
        group = pq.ParquetFile(staged).metadata.row_group(0)
        with_stats = {group.column(i).path_in_schema for i in range(group.num_columns)
                      if group.column(i).statistics is not None and group.column(i).statistics.has_min_max}
        assert with_stats == {"date", "order_amount", "loyalty_points", *([sorted_by] if sorted_by else [])}


def test_distinct_columns_are_written_without_a_dictionary(tmp_path):
    """A column with a value per record (the key) is stored plain; the others keep their dictionary."""
    schema = arrow_schema(REDEMPTION, FIELDS)
    batch = pa.RecordBatch.from_pylist([{"id": f"r_{i}", "result": "SUCCESS"} for i in range(50)], schema=schema)
    part = PartWriter(ObjectStoragePath(str(tmp_path)), "part-d.parquet", schema, {}, 50, "o",
                      distinct=REDEMPTION.distinct_fields)
    part.write(batch)
    encoded = dictionary_encoded(tmp_path / part.close().staged)
    assert "id" not in encoded
    assert "result" in encoded


def test_dictionary_columns_leave_out_only_the_distinct_ones():
    schema = arrow_schema(REDEMPTION, FIELDS)
    assert dictionary_columns(schema, ()) is True
    assert dictionary_columns(schema, ("id",)) == [f for f in FIELDS if f != "id"]
    assert dictionary_columns(pa.schema([("id", pa.string())]), ("id",)) is False


def test_aborted_write_leaves_previous_data(tmp_path):
    schema = arrow_schema(REDEMPTION, FIELDS)
    partition = ObjectStoragePath(str(tmp_path / "p"))
    partition.mkdir(parents=True, exist_ok=True)
    batch = pa.RecordBatch.from_pylist([{"id": "r_1"}], schema=schema)
    good = PartitionWriter(partition, schema, metadata={})
    writer = good.part("part-a.parquet")
    writer.write(batch)
    good.add(writer.close())
    good.commit({})
    failing = PartitionWriter(partition, schema, metadata={})
    done = failing.part("part-b.parquet")
    done.write(batch)
    failing.add(done.close())
    half = failing.part("part-c.parquet")
    half.write(batch)
    half.abort()
    failing.abort()
    assert sorted(p.name for p in partition.iterdir()) == [MANIFEST, "part-a.parquet"]


def test_a_commit_failing_half_way_is_undone(tmp_path, monkeypatch):
    schema = arrow_schema(REDEMPTION, FIELDS)
    partition = ObjectStoragePath(str(tmp_path))
    _land(partition, schema, "old", 1, 1)
    failing = PartitionWriter(partition, schema, metadata={})
    for n in range(2):
        part = failing.part(f"part-new-{n}.parquet")
        part.write(pa.RecordBatch.from_pylist([{"id": f"new-{n}"}], schema=schema))
        failing.add(part.close())
    real_rename, calls = type(partition).rename, []

    def rename_then_fail(self, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(type(partition), "rename", rename_then_fail)
    with pytest.raises(OSError, match="disk full"):
        failing.commit({"run": "new"})
    monkeypatch.undo()
    failing.abort()
    assert sorted(p.name for p in partition.iterdir()) == [MANIFEST, "part-old-0.parquet"]
    assert json.loads((partition / MANIFEST).read_text())["run"] == "old"


def _land(partition, schema, run: str, files: int, rows: int, barrier=None, owner=None):
    writer = PartitionWriter(partition, schema, metadata={}, owner=owner)
    for n in range(files):
        part = writer.part(f"part-{run}-{n}.parquet")
        part.write(pa.RecordBatch.from_pylist([{"id": f"{run}-{n}-{i}"} for i in range(rows)], schema=schema))
        writer.add(part.close())
    if barrier is not None:
        barrier.wait()
    return writer.commit({"run": run})


def test_concurrent_runs_of_a_window_leave_the_last_manifest_whole(tmp_path):
    import threading

    schema = arrow_schema(REDEMPTION, FIELDS)
    partition = ObjectStoragePath(str(tmp_path / "redemption" / "window_start=20240101T000000Z"))
    partition.mkdir(parents=True, exist_ok=True)
    for round_ in range(15):
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=_land, args=(partition, schema, f"r{round_}{who}", 3, 5, barrier))
                   for who in "ABC"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        manifest = json.loads((partition / MANIFEST).read_text())
        visible = sorted(p.name for p in partition.iterdir() if not p.name.startswith((".", "_")))
        assert visible == sorted(f["path"] for f in manifest["files"])  # nothing of the losers stays visible
        table = ds.dataset(str(partition), format="parquet").to_table()
        ids = table.column("id").to_pylist()
        assert len(ids) == len(set(ids)) == 15 and {i.split("-")[0] for i in ids} == {manifest["run"]}
        assert sorted(p.name for p in partition.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_commit_lock_waits_for_the_holder_and_breaks_a_stale_one(tmp_path, monkeypatch):
    import threading
    import time as clock

    from voucherify_provider.landing import writer as writer_module

    partition = ObjectStoragePath(str(tmp_path))
    order: list[str] = []
    holder = writer_module.CommitLock(partition, "holder", timeout=10)
    holder.__enter__()
    waiting = threading.Event()

    def poll_again(seconds: float) -> None:  # the second lock found the file taken and waits
        waiting.set()
        clock.sleep(0.01)

    def second():
        with writer_module.CommitLock(partition, "second", timeout=10, sleep=poll_again):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    assert waiting.wait(10)
    order.append("holder")
    holder.__exit__(None, None, None)
    thread.join()
    assert order == ["holder", "second"] and not (partition / writer_module.LOCK).exists()
    now = [0.0]  # a clock the waiting lock advances itself: the timeout needs no wall time

    def advance(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(TimeoutError, match="delete the lock file"):
        with writer_module.CommitLock(partition, "a", timeout=1):
            with writer_module.CommitLock(partition, "b", timeout=0.3, sleep=advance, monotonic=lambda: now[0]):
                pass
    assert 0.3 < now[0] < 0.6
    # A lock left by a killed process: broken once it is older than the stale limit.
    (partition / writer_module.LOCK).write_bytes(json.dumps({"token": "dead", "at": clock.time() - 3600}).encode())
    monkeypatch.setattr(writer_module, "STALE_LOCK_SECONDS", 60.0)
    with writer_module.CommitLock(partition, "alive", timeout=1):
        assert b"alive" in (partition / writer_module.LOCK).read_bytes()
    # A fresh lock left by an earlier try of the same task (killed mid-commit): broken at once.
    (partition / writer_module.LOCK).write_bytes(json.dumps({"token": "ti-7-0001", "at": clock.time()}).encode())
    with writer_module.CommitLock(partition, "ti-7", timeout=1):
        assert b"ti-7-" in (partition / writer_module.LOCK).read_bytes()


def test_a_retry_sweeps_what_its_killed_try_left_staged(tmp_path):
    schema = arrow_schema(REDEMPTION, FIELDS)
    partition = ObjectStoragePath(str(tmp_path))
    killed = PartitionWriter(partition, schema, metadata={}, owner="ti-1")
    part = killed.part("part-x.parquet")
    part.write(pa.RecordBatch.from_pylist([{"id": "x"}], schema=schema))
    killed.add(part.close())  # staged, never committed: the process died here
    other = PartitionWriter(partition, schema, metadata={}, owner="ti-2")
    staged_by_other = other.part("part-y.parquet")
    staged_by_other.write(pa.RecordBatch.from_pylist([{"id": "y"}], schema=schema))
    other.add(staged_by_other.close())
    retry = PartitionWriter(partition, schema, metadata={}, owner="ti-1")
    assert retry.sweep_staged() == 1
    assert [p.name[:10] for p in partition.iterdir()] == [".tmp-ti-2-"]  # only ti-2's staging remains
    _land(partition, schema, "z", 1, 2, owner="ti-1")
    assert sorted(p.name for p in partition.iterdir() if not p.name.startswith(".")) == [MANIFEST, "part-z-0.parquet"]
    other.commit({"run": "y"})  # the concurrent run still commits whole, and wins as the last one
    assert sorted(p.name for p in partition.iterdir()) == [MANIFEST, "part-y.parquet"]


def test_a_commit_removes_its_own_abandoned_staging_but_not_another_runs(tmp_path):
    schema = arrow_schema(REDEMPTION, FIELDS)
    partition = ObjectStoragePath(str(tmp_path))
    abandoned = PartitionWriter(partition, schema, metadata={}, owner="ti-1").part("part-a.parquet")
    abandoned.write(pa.RecordBatch.from_pylist([{"id": "a"}], schema=schema))
    abandoned.close()  # staged and left (e.g. an attempt whose clean-up could not see the file)
    other = PartitionWriter(partition, schema, metadata={}, owner="ti-2").part("part-b.parquet")
    other.write(pa.RecordBatch.from_pylist([{"id": "b"}], schema=schema))
    other.close()
    _land(partition, schema, "z", 1, 2, owner="ti-1")
    assert sorted(p.name[:10] if p.name.startswith(".") else p.name for p in partition.iterdir()) == [
        ".tmp-ti-2-", MANIFEST, "part-z-0.parquet"]
