"""The current-state table's layout: creation-month partitions, changes that touch only their files,
migration of the older layout, reconcile and compaction by partition, the landing's types on read.

Tables are built through the provider's own functions on a local path; a small reference model (a dict
keyed by id, newest change wins) says what every table must hold."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from tests.support.tables import write_id_list
from voucherify_provider import catalog
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing import current_state as cs
from voucherify_provider.landing import delta_files, spill

pytestmark = pytest.mark.unit

UTC = timezone.utc
ORDER = catalog.OBJECTS["order"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LANDED = pa.schema([("id", pa.string()), ("status", pa.string()), ("amount", pa.decimal128(20, 2)),
                    ("created_at", cs.TIME), ("updated_at", cs.TIME)])


def versions(records: list[tuple[str, datetime, datetime | None, str]]) -> pa.RecordBatchReader:
    """Change rows (id, created_at, updated_at, status) with the bookkeeping columns, as merges take them."""
    schema = cs.state_schema(LANDED)
    rows = [{"id": i, "status": s, "amount": None, "created_at": c, "updated_at": u, "_change_at": u or c,
             "_deleted": False, "_deleted_at": None, "_export_id": "exp_test"} for i, c, u, s in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    return pa.RecordBatchReader.from_batches(schema, table.to_batches(max_chunksize=7))


def table_rows(path: Path) -> dict[str, dict]:
    """The table's rows by id, read through the provider's reader."""
    rows = cs.current_state_dataset(str(path)).to_table().to_pylist()
    assert len(rows) == len({r["id"] for r in rows}), "one row per key"
    return {r["id"]: r for r in rows}


def live_paths(path: Path) -> set[str]:
    from deltalake import DeltaTable

    return {Path(u).relative_to(path).as_posix() for u in DeltaTable(str(path)).file_uris()}


@pytest.fixture
def table(tmp_path) -> tuple[Path, ObjectStoragePath]:
    return tmp_path / "current" / "order", ObjectStoragePath(str(tmp_path / "current" / "order"))


def test_changes_land_in_their_creation_month_and_touch_only_its_files(table):
    path, target = table
    history = [(f"ord_{m}_{k}", T0.replace(month=m) + timedelta(hours=k), None, "NEW")
               for m in (1, 2, 3) for k in range(20)]
    cs.merge_rows(target, ORDER, versions(history), "t")
    from deltalake import DeltaTable

    delta = DeltaTable(str(path))
    assert delta.metadata().partition_columns == [delta_files.PARTITION]
    assert sorted(p.split("/")[0] for p in live_paths(path)) == [
        "_created_month=2024-01", "_created_month=2024-02", "_created_month=2024-03"]
    before = live_paths(path)
    later = T0.replace(month=4)
    counts = cs.merge_rows(target, ORDER, versions([("ord_3_5", T0.replace(month=3) + timedelta(hours=5), later,
                                                     "PAID"),
                                                    ("ord_new", later, None, "NEW")]), "t")
    assert counts["num_target_rows_updated"] == 1 and counts["num_target_rows_inserted"] == 1
    assert counts["num_partitions_touched"] == 2 and counts["num_target_files_scanned"] == 1
    after = live_paths(path)
    # January and February are not even read; March's one file is replaced; April is new.
    assert {p for p in before if "2024-03" not in p} <= after
    assert not {p for p in before if "2024-03" in p} & after
    rows = table_rows(path)
    assert rows["ord_3_5"]["status"] == "PAID" and rows["ord_3_5"]["_change_at"] == later
    assert rows["ord_new"][delta_files.PARTITION] == "2024-04" and len(rows) == 61


def test_any_order_duplicates_and_re_merges_end_in_the_newest_version(table, monkeypatch):
    """Random change batches (the same record several times, older versions after newer ones, months
    mixed), with files and chunks made tiny so rollover and multi-chunk paths run: the table equals the
    reference model after every merge, and merging everything again changes nothing."""
    monkeypatch.setattr(delta_files, "FILE_ROWS", 13)
    monkeypatch.setattr(cs, "FILE_ROWS", 13)
    monkeypatch.setattr(spill, "CHUNK_ROWS", 11)
    monkeypatch.setattr(cs, "CHUNK_ROWS", 11)
    path, target = table
    rng = random.Random(7)
    created = {f"ord_{k:03d}": T0 + timedelta(days=rng.randrange(100), minutes=k) for k in range(120)}
    expected: dict[str, tuple[datetime, str]] = {}
    batches = []
    for step in range(6):
        batch = []
        for key in rng.sample(sorted(created), 40):
            changed = created[key] + timedelta(hours=rng.randrange(1, 2000))
            status = f"S{step}-{rng.randrange(1000)}"
            batch.append((key, created[key], changed, status))
            if key not in expected or changed > expected[key][0]:
                expected[key] = (changed, status)
        batch.append(batch[0])  # the same version twice in one batch
        batches.append(batch)
        cs.merge_rows(target, ORDER, versions(batch), "t")
        rows = table_rows(path)
        assert {k: (r["_change_at"], r["status"]) for k, r in rows.items()} == expected
        assert all(r[delta_files.PARTITION] == created[k].strftime("%Y-%m") for k, r in rows.items())
    for batch in reversed(batches):
        counts = cs.merge_rows(target, ORDER, versions(batch), "t")
        assert counts["num_target_rows_updated"] == counts["num_target_rows_inserted"] == 0
    assert max(pq.ParquetFile(path / p).metadata.num_rows for p in live_paths(path)) <= 13


def test_a_failed_merge_leaves_the_table_and_its_folder_as_they_were(table, monkeypatch):
    path, target = table
    cs.merge_rows(target, ORDER, versions([("ord_a", T0, None, "NEW")]), "t")
    before_rows, before_files = table_rows(path), sorted(p.relative_to(path) for p in path.rglob("*.parquet"))

    def broken(self, *args, **kwargs):
        raise OSError("the store went away")

    monkeypatch.setattr(delta_files.Transaction, "commit", broken)
    with pytest.raises(OSError, match="went away"):
        cs.merge_rows(target, ORDER, versions([("ord_a", T0, T0 + timedelta(days=1), "PAID"),
                                               ("ord_b", T0.replace(month=5), None, "NEW")]), "t")
    assert table_rows(path) == before_rows
    assert sorted(p.relative_to(path) for p in path.rglob("*.parquet")) == before_files


def test_an_unpartitioned_table_of_the_older_layout_is_migrated_in_one_commit(table):
    """Tables written by earlier releases (delta-rs merges, no partitions, string_view files) are rewritten
    into creation months by the first merge that meets them, keeping every row and its history."""
    from deltalake import DeltaTable, write_deltalake

    path, target = table
    old = versions([(f"ord_{k}", T0 + timedelta(days=17 * k), None, "NEW") for k in range(12)]).read_all()
    old = old.set_column(old.schema.get_field_index("_deleted"), "_deleted",
                         pa.array([k == 3 for k in range(12)]))
    write_deltalake(str(path), old)  # what the previous release's first merge wrote
    version = DeltaTable(str(path)).version()
    counts = cs.merge_rows(target, ORDER, versions([("ord_2", T0 + timedelta(days=34), T0.replace(month=6), "PAID")]),
                           "t")
    delta = DeltaTable(str(path))
    assert delta.metadata().partition_columns == [delta_files.PARTITION]
    assert delta.version() == version + 2  # the migration, then the merge
    assert counts["num_target_rows_updated"] == 1
    rows = table_rows(path)
    assert sorted(rows) == sorted(old.column("id").to_pylist())
    assert rows["ord_2"]["status"] == "PAID" and rows["ord_3"]["_deleted"] is True
    assert {r[delta_files.PARTITION] for r in rows.values()} == {
        (T0 + timedelta(days=17 * k)).strftime("%Y-%m") for k in range(12)}


@pytest.mark.parametrize("file_rows", [1_000_000, 2], ids=["a-file-a-month", "several-files-a-month"])
def test_the_reconcile_marks_by_partition_only_what_the_list_lacks(table, tmp_path, monkeypatch, file_rows):
    monkeypatch.setattr(spill, "CHUNK_ROWS", 3)  # several chunks of ids per month
    monkeypatch.setattr(cs, "CHUNK_ROWS", 3)
    monkeypatch.setattr(delta_files, "FILE_ROWS", file_rows)
    path, target = table
    records = [(f"ord_{k:02d}", T0 + timedelta(days=9 * k), None, "NEW") for k in range(30)]
    cs.merge_rows(target, ORDER, versions(records), "t")
    months = len({r[1].strftime("%Y-%m") for r in records})
    assert len(live_paths(path)) == months if file_rows > 30 else len(live_paths(path)) > months
    cutoff = T0 + timedelta(days=400)
    late = ("ord_05", records[5][1], cutoff + timedelta(hours=1), "PAID")  # changed after the list was taken
    cs.merge_rows(target, ORDER, versions([late]), "t")
    gone = {"ord_01", "ord_05", "ord_17", "ord_18", "ord_29"}
    kept = [(i, c) for i, c, _, _ in records if i not in gone]
    untouched = {p for p in live_paths(path) if "2024-03" in p}  # no id of March is missing
    assert not {r[1].strftime("%Y-%m") for r in records if r[0] in gone} & {"2024-03"}
    counts = cs.mark_deleted(target, ORDER, write_id_list(tmp_path / "ids", kept), cutoff, "t")
    rows = table_rows(path)
    assert {k for k, r in rows.items() if r["_deleted"]} == gone - {"ord_05"}
    assert {r["_deleted_at"] for r in rows.values() if r["_deleted"]} == {cutoff}
    assert counts["num_target_rows_updated"] == 4 and untouched <= live_paths(path)
    # Only files holding a missing id are rewritten: January's, June's (two ids) and September's.
    assert counts["num_target_files_removed"] == 3 if file_rows > 30 else 3 <= counts["num_target_files_removed"] <= 4
    again = cs.mark_deleted(target, ORDER, write_id_list(tmp_path / "ids2", kept), cutoff, "t")
    assert again["num_target_rows_updated"] == 0


def test_an_id_list_without_creation_times_is_refused_with_the_fix(table, tmp_path):
    _, target = table
    cs.merge_rows(target, ORDER, versions([("ord_a", T0, None, "NEW")]), "t")
    ids = write_id_list(tmp_path / "ids", [("ord_a", T0)], fields=("id",))
    with pytest.raises(VoucherifyConfigError, match=r"lacks 'created_at'.*fields=\['id', 'created_at'\]"):
        cs.mark_deleted(target, ORDER, ids, T0 + timedelta(days=1), "t")


def test_an_explicit_cutoff_before_the_interval_is_kept(table, tmp_path):
    """The operator's cutoff is used as given, even before the run's data interval: a record changed between
    the cutoff and the interval start may be newer than the id list, so it must stay live."""
    from voucherify_provider.operators.current_state import VoucherifyMarkDeletedOperator

    path, target = table
    cutoff = T0 + timedelta(days=10)
    cs.merge_rows(target, ORDER, versions([("ord_old", T0, None, "NEW"),
                                           ("ord_recent", T0, T0 + timedelta(days=12), "PAID")]), "t")
    ids = write_id_list(tmp_path / "ids", [])
    operator = VoucherifyMarkDeletedOperator(task_id="m", snapshot={"partition": str(ids)}, exported_object="order",
                                             destination=str(tmp_path), cutoff=cutoff.isoformat(),
                                             vacuum_retention_hours=None)
    counts = operator.execute({"data_interval_start": T0 + timedelta(days=20),
                               "data_interval_end": T0 + timedelta(days=21)})
    rows = table_rows(path)
    assert rows["ord_old"]["_deleted"] and rows["ord_old"]["_deleted_at"] == cutoff
    assert not rows["ord_recent"]["_deleted"] and counts["num_target_rows_updated"] == 1


def test_compaction_packs_small_files_per_month_and_keeps_every_row(table):
    path, target = table
    for day in range(8):  # inserts only: each day a new small file in January
        cs.merge_rows(target, ORDER, versions([(f"ord_{day}_{k}", T0 + timedelta(days=day, minutes=k), None, "NEW")
                                               for k in range(5)]), "t")
    cs.merge_rows(target, ORDER, versions([("ord_feb", T0.replace(month=2), None, "NEW")]), "t")
    before = table_rows(path)
    assert len([p for p in live_paths(path) if "2024-01" in p]) == 8
    february = {p for p in live_paths(path) if "2024-02" in p}
    counts = cs.compact(target, ORDER, "t")
    assert counts == {"files_compacted": 8, "files_written": 1}
    assert len([p for p in live_paths(path) if "2024-01" in p]) == 1 and february <= live_paths(path)
    assert table_rows(path) == before
    assert cs.compact(target, ORDER, "t") == {"files_compacted": 0, "files_written": 0}


def test_readers_get_the_landing_types(table):
    """pyarrow (the provider's dataset), DuckDB over it, and the files themselves: string and
    timestamp[ms, UTC], not delta-rs's string_view and timestamp[us]."""
    path, target = table
    cs.merge_rows(target, ORDER, versions([("ord_a", T0, None, "NEW"), ("ord_b", T0.replace(month=7), None, "NEW")]),
                  "t")
    dataset = cs.current_state_dataset(str(path))
    assert dataset.schema.field("id").type == pa.string()
    assert dataset.schema.field("created_at").type == pa.timestamp("ms", tz="UTC")
    assert dataset.schema.field("amount").type == pa.decimal128(20, 2)
    july = dataset.to_table(filter=pa.compute.field(delta_files.PARTITION) == "2024-07")
    assert july.column("id").to_pylist() == ["ord_b"]
    for file in live_paths(path):
        assert pq.read_schema(path / file).field("id").type == pa.string()
    con = duckdb.connect()
    con.register("orders", dataset)
    assert con.execute("select count(*), min(created_at) from orders").fetchone() == (2, T0)
