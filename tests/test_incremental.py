"""Incremental loads: change windows land every change once; the current-state table follows the emulator."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.support.dag_files import DagFile

UTC = timezone.utc
# Weekly windows (Sunday to Sunday) cover the emulator's records (created Jan 1-8) and their history.
WEEK_ENDS = [datetime(2024, 1, 7, tzinfo=UTC) + timedelta(weeks=k) for k in range(4)]
STATE_FIELDS = ["id", "created_at", "updated_at", "status", "amount"]

CHANGES_DAG = """
from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator
with DAG(DAG_ID, schedule=CronDataIntervalTimetable('@weekly', timezone='UTC'),
         start_date=datetime(2023, 12, 31, tzinfo=timezone.utc), catchup=False) as dag:
    create = VoucherifyCreateExportOperator(task_id='create', exported_object='order', incremental=True,
                                            fields=['id', 'status', 'amount'], voucherify_conn_id=CONN,
                                            wait_for_completion=True, poll_interval=0.1)
    land = VoucherifyDownloadToWarehouseOperator(task_id='land', export_id=create.output, destination=DEST,
                                                 exported_object='order', voucherify_conn_id=CONN)
    merge = VoucherifyMergeCurrentStateOperator(task_id='merge', landed=land.output, exported_object='order',
                                                destination=DEST)
    create >> land >> merge
"""

IDS_DAG = """
from voucherify_provider.operators.current_state import VoucherifyMarkDeletedOperator
with DAG(DAG_ID, schedule=CronDataIntervalTimetable('@weekly', timezone='UTC'),
         start_date=datetime(2023, 12, 31, tzinfo=timezone.utc), catchup=False) as dag:
    ids = VoucherifyCreateExportOperator(task_id='ids', exported_object='order', windowed=False,
                                         fields=['id', 'created_at'],
                                         voucherify_conn_id=CONN, wait_for_completion=True, poll_interval=0.1)
    land = VoucherifyDownloadToWarehouseOperator(task_id='land', export_id=ids.output, destination=DEST + '/_ids',
                                                 exported_object='order', voucherify_conn_id=CONN)
    mark = VoucherifyMarkDeletedOperator(task_id='mark', snapshot=land.output, exported_object='order',
                                         destination=DEST, vacuum_retention_hours=0)
    ids >> land >> mark
"""


@pytest.fixture
def dags(airflow_db, tmp_path):
    made: list[DagFile] = []

    def make(body: str) -> DagFile:
        made.append(DagFile(body.replace("DEST", repr(str(tmp_path)))))
        return made[-1]

    yield make
    for dag in made:
        dag.remove()


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def partition_ids(root, start: datetime) -> list[str]:
    partition = root / "order" / f"window_start={stamp(start)}"
    manifest = json.loads((partition / "_manifest.json").read_text())
    assert manifest["mode"] == "changes" and manifest["placed_by"] == ["updated_at", "created_at"]
    return sorted(ds.dataset([str(partition / f["path"]) for f in manifest["files"]]).to_table()
                  .column("id").to_pylist())


def current_state(root) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(str(root / "current" / "order")).to_pyarrow_table()


def live_state(table: pa.Table) -> list[dict[str, str]]:
    """The table's live rows, rendered as the emulator renders its state."""
    con = duckdb.connect()
    con.register("state", table)
    rows = con.execute(
        "select id, strftime(created_at at time zone 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'), "
        "coalesce(strftime(updated_at at time zone 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'), ''), status, "
        "printf('%.2f', amount) from state where not _deleted order by id").fetchall()
    return [dict(zip(STATE_FIELDS, row, strict=True)) for row in rows]


def test_change_windows_land_each_change_once_and_merge_into_the_current_state(dags, emu, tmp_path):
    changes = dags(CHANGES_DAG)
    landed: list[str] = []
    for end in WEEK_ENDS:
        run = changes.test(end)
        assert changes.states(run) == {"create": "success", "land": "success", "merge": "success"}
        start = end - timedelta(weeks=1)
        ids = partition_ids(tmp_path, start)
        truth = emu.ground_truth("order", start.isoformat(), end.isoformat(), ids=True, placed_by="last_change")
        assert ids == sorted(truth["ids"]), end
        landed.extend(ids)
    assert len(landed) == len(set(landed))  # no version in two windows
    table = current_state(tmp_path)
    expected = sorted(emu.state("order", STATE_FIELDS), key=lambda r: r["id"])
    assert live_state(table) == expected
    # The emulator's history has records never updated (updated_at null), updated several times, and
    # updated exactly on a window boundary; all of them are in the table with their last version.
    assert any(r["updated_at"] == "" for r in expected) and any(r["updated_at"] for r in expected)
    assert any(r["updated_at"].endswith("T00:00:00.000Z") for r in expected)

    before = table.sort_by("id")
    run = changes.test(WEEK_ENDS[0])  # re-running a window changes nothing
    assert changes.xcom(run, "merge")[0].get("num_target_rows_updated", 0) == 0
    assert current_state(tmp_path).sort_by("id").drop_columns([]).equals(before)


def test_deleted_records_are_marked_by_the_periodic_id_list(dags, emu, tmp_path):
    changes, ids = dags(CHANGES_DAG), dags(IDS_DAG)
    emu.configure(data_clock="2024-01-07T00:00:00Z")  # the first week has passed
    changes.test(WEEK_ENDS[0])
    early = {r["id"] for r in live_state(current_state(tmp_path))}
    assert early == {r["id"] for r in emu.state("order", ["id"])}
    emu.configure(data_clock="2024-01-28T00:00:00Z")  # three more: some of those records are deleted since
    for end in WEEK_ENDS[1:]:
        changes.test(end)
    gone = early - {r["id"] for r in emu.state("order", ["id"])}
    assert gone, "the emulator deletes some records in these weeks"
    assert gone <= {r["id"] for r in live_state(current_state(tmp_path))}  # change windows cannot see deletions
    run = ids.test(WEEK_ENDS[-1])
    assert ids.states(run) == {"ids": "success", "land": "success", "mark": "success"}
    table = current_state(tmp_path)
    assert live_state(table) == sorted(emu.state("order", STATE_FIELDS), key=lambda r: r["id"])
    deleted = table.filter(pa.compute.field("_deleted"))
    assert sorted(deleted.column("id").to_pylist()) == sorted(gone)
    assert set(deleted.column("_deleted_at").to_pylist()) == {WEEK_ENDS[-1]}
    from deltalake import DeltaTable

    live_files = {Path(u).name for u in DeltaTable(str(tmp_path / "current" / "order")).file_uris()}
    on_disk = {p.name for p in (tmp_path / "current" / "order").rglob("*.parquet")}
    assert ids.xcom(run, "mark")["files_vacuumed"] > 0 and on_disk == live_files  # rewritten files are gone
    again = ids.test(WEEK_ENDS[-1])  # marking again changes nothing
    assert ids.xcom(again, "mark").get("num_target_rows_updated", 0) == 0


def test_the_wider_reading_of_or_is_a_superset_and_still_lands_exactly(dags, emu, tmp_path):
    """If the API's ``or`` joined single conditions, a change window would match nearly everything: the
    landing keeps exactly the window's changes and says how many rows it dropped."""
    emu.configure(or_junction="condition")
    changes = dags(CHANGES_DAG)
    run = changes.test(WEEK_ENDS[1])
    assert changes.states(run)["land"] == "success"
    start = WEEK_ENDS[0]
    truth = emu.ground_truth("order", start.isoformat(), WEEK_ENDS[1].isoformat(), ids=True, placed_by="last_change")
    assert partition_ids(tmp_path, start) == sorted(truth["ids"])
    manifest = changes.xcom(run, "land")
    assert manifest["rows_outside_window"] > manifest["rows"] > 0


@pytest.mark.unit
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"exported_object": "redemption", "incremental": True}, "redemption cannot be exported incrementally"),
    ({"exported_object": "order", "incremental": True, "windowed": False}, "cannot be windowed=False"),
    ({"exported_object": "customer", "incremental": True,
      "filters": {"email": {"conditions": {"$is": ["a@b.c"]}}}}, "filters cannot be combined"),
])
def test_bad_incremental_requests_fail_before_any_call(kwargs, message):
    from voucherify_provider.errors import VoucherifyConfigError
    from voucherify_provider.operators.export import VoucherifyCreateExportOperator

    with pytest.raises(VoucherifyConfigError, match=message):
        VoucherifyCreateExportOperator(task_id="x", **kwargs)


@pytest.mark.unit
def test_the_change_filter_asks_for_creations_or_updates_in_the_window():
    from voucherify_provider.operators.export import VoucherifyCreateExportOperator

    task = VoucherifyCreateExportOperator(task_id="x", exported_object="voucher", incremental=True,
                                          fields=["code"], window_start="2024-01-02T00:00:00Z",
                                          window_end="2024-01-03T00:00:00Z")
    plan = task.plan({})
    window = {"conditions": {"$after": ["2024-01-01T23:59:59.999Z"], "$before": ["2024-01-03T00:00:00.000Z"]}}
    assert plan["filters"] == {"junction": "or", "created_at": window, "updated_at": window}
    assert plan["fields"] == ["code", "created_at", "updated_at", "id"]


@pytest.mark.unit
def test_the_emulator_answers_the_state_at_any_time(emu):
    """State at T: only records created before T, each with the updates made before T, none deleted by T."""
    early = {r["id"]: r for r in emu.state("order", ["id", "updated_at", "status"], as_of="2024-01-04T00:00:00Z")}
    late = {r["id"]: r for r in emu.state("order", ["id", "updated_at", "status"])}
    assert early and late and set(early) - set(late)  # some records were deleted since
    assert all(r["updated_at"] < "2024-01-04" for r in early.values())
    assert any(late[i]["updated_at"] > early[i]["updated_at"] for i in set(early) & set(late))


@pytest.mark.unit
def test_a_field_added_to_the_export_becomes_a_column_of_the_current_state(emu, hook, tmp_path):
    from deltalake import DeltaTable

    from tests.support.exports import wait_done
    from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator
    from voucherify_provider.operators.export import VoucherifyCreateExportOperator
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    def land_and_merge(fields: list[str], end: datetime) -> None:
        context = {"data_interval_start": end - timedelta(weeks=1), "data_interval_end": end}
        export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="order", incremental=True,
                                                   fields=fields, voucherify_conn_id="voucherify_test"
                                                   ).execute(dict(context))
        wait_done(hook, export_id)
        landed = VoucherifyDownloadToWarehouseOperator(
            task_id="l", export_id=export_id, destination=str(tmp_path), exported_object="order",
            voucherify_conn_id="voucherify_test").execute(dict(context))
        VoucherifyMergeCurrentStateOperator(task_id="m", landed=landed, exported_object="order",
                                            destination=str(tmp_path)).execute({})

    land_and_merge(["id", "status"], WEEK_ENDS[0])
    land_and_merge(["id", "status", "source_id"], WEEK_ENDS[1])
    table = DeltaTable(str(tmp_path / "current" / "order")).to_pyarrow_table()
    sources = dict(zip(table.column("id").to_pylist(), table.column("source_id").to_pylist(), strict=True))
    second = set(partition_ids(tmp_path, WEEK_ENDS[0]))
    assert {i for i, s in sources.items() if s is not None} == second  # only the later window carried it
    assert all(s is None for i, s in sources.items() if i not in second)
