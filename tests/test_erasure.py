"""Erasure reaches the lake: deleted records redacted or removed from the current-state table, and an
erasure request's ids removed (or redacted) from every landed partition and the table, atomically, with an
audit record of hashed ids. Real landings from the emulator, read back with DuckDB."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from tests.support.exports import wait_done
from tests.support.operators import CONN_ID, context, land
from tests.support.tables import write_id_list
from voucherify_provider import catalog
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing import current_state as cs
from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator
from voucherify_provider.operators.erasure import VoucherifyEraseRecordsOperator, parse_ids
from voucherify_provider.operators.export import VoucherifyCreateExportOperator

pytestmark = pytest.mark.unit

UTC = timezone.utc
CUSTOMER = catalog.OBJECTS["customer"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = [datetime(2024, 1, d, tzinfo=UTC) for d in (2, 3, 4)]


def _customers(records: list[tuple[str, str, datetime]]) -> pa.RecordBatchReader:
    landed = pa.schema([("id", pa.string()), ("name", pa.string()), ("email", pa.string()),
                        ("orders_total_amount", pa.decimal128(20, 2)), ("created_at", cs.TIME),
                        ("updated_at", cs.TIME)])
    schema = cs.state_schema(landed)
    rows = [{"id": i, "name": f"Name {i}", "email": e, "orders_total_amount": None, "created_at": c,
             "updated_at": None, "_change_at": c, "_deleted": False, "_deleted_at": None, "_export_id": "exp_t"}
            for i, e, c in records]
    return pa.RecordBatchReader.from_batches(schema, pa.Table.from_pylist(rows, schema=schema).to_batches())


@pytest.mark.parametrize("deleted_records", ["redact", "remove"])
def test_records_deleted_in_voucherify_lose_their_personal_data(tmp_path, deleted_records):
    path = tmp_path / "current" / "customer"
    target = ObjectStoragePath(str(path))
    records = [(f"cust_{k:02d}", f"person{k}@example.com", T0 + timedelta(days=20 * k)) for k in range(8)]
    cs.merge_rows(target, CUSTOMER, _customers(records), "t")
    gone = {"cust_01", "cust_06"}
    ids = write_id_list(tmp_path / "ids", [(i, c) for i, _, c in records if i not in gone])
    cutoff = T0 + timedelta(days=400)
    counts = cs.mark_deleted(target, CUSTOMER, ids, cutoff, "t", deleted_records)
    assert counts["num_target_rows_updated"] == 2
    rows = {r["id"]: r for r in cs.current_state_dataset(str(path)).to_table().to_pylist()}
    if deleted_records == "remove":
        assert set(rows) == {i for i, _, _ in records} - gone
    else:
        assert set(rows) == {i for i, _, _ in records}
        for key in gone:
            assert rows[key]["_deleted"] and rows[key]["email"] is None and rows[key]["name"] is None
            assert rows[key]["id"] == key and rows[key]["created_at"] is not None  # still a record
    kept = [r for k, r in rows.items() if k not in gone]
    assert all(r["email"] and not r["_deleted"] for r in kept)
    cs.vacuum(target, 0, "t")  # older versions held the deleted records' emails: gone with them
    held = b"".join(p.read_bytes() for p in path.rglob("*.parquet"))
    assert b"person1@example.com" not in held and b"person6@example.com" not in held


def test_mark_deleted_refuses_an_unknown_choice():
    from voucherify_provider.operators.current_state import VoucherifyMarkDeletedOperator

    with pytest.raises(VoucherifyConfigError, match="deleted_records must be one of keep, redact, remove"):
        VoucherifyMarkDeletedOperator(task_id="m", snapshot={}, exported_object="customer", destination="/tmp/l",
                                      deleted_records="forget")


def _land_changes(hook, lake: Path, obj: str, day: datetime) -> dict:
    ctx = context(data_interval_start=day, data_interval_end=day + timedelta(days=1))
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object=obj, incremental=obj != "redemption",
                                               fields=list(catalog.OBJECTS[obj].fields),
                                               voucherify_conn_id=CONN_ID).execute(ctx)
    wait_done(hook, export_id)
    return land(lake, export_id, exported_object=obj).execute(ctx)


@pytest.fixture
def lake(emu, hook, tmp_path):
    """Three days of customers (change windows, merged into the current state) and of redemptions."""
    lake = tmp_path / "lake"
    landed = [_land_changes(hook, lake, "customer", day) for day in DAYS]
    VoucherifyMergeCurrentStateOperator(task_id="m", landed=landed, exported_object="customer",
                                        destination=str(lake)).execute(context())
    for day in DAYS:
        _land_changes(hook, lake, "redemption", day)
    return lake


def _sql(query: str) -> list[tuple]:
    return duckdb.sql(query).fetchall()


def test_an_erasure_request_leaves_no_trace_of_its_customers(lake, emu):
    customers = f"read_parquet('{lake}/customer/*/*.parquet', hive_partitioning=true)"
    redemptions = f"read_parquet('{lake}/redemption/*/*.parquet', hive_partitioning=true)"
    # Two customers who have redemptions in the lake, and one in none of them.
    chosen = [r[0] for r in _sql(f"SELECT DISTINCT c.id FROM {customers} c JOIN {redemptions} r ON r.customer_id "
                                 "= c.id ORDER BY 1 LIMIT 2")]
    assert len(chosen) == 2
    ids = [*chosen, "cust_not_landed"]
    before = {r[0]: r[1] for r in _sql(f"SELECT customer_id, count(*) FROM {redemptions} GROUP BY 1")}
    untouched = {p.name: (p / "_manifest.json").read_text() for p in (lake / "redemption").iterdir()
                 if not _sql(f"SELECT 1 FROM read_parquet('{p}/*.parquet') WHERE customer_id IN "
                             f"({', '.join(repr(i) for i in chosen)})")}

    erase_customers = VoucherifyEraseRecordsOperator(task_id="e", exported_object="customer", ids=json.dumps(ids),
                                                     destination=str(lake))
    result = erase_customers.execute(context())
    redact = VoucherifyEraseRecordsOperator(task_id="r", exported_object="redemption", ids=ids, action="redact",
                                            match_field="customer_id", destination=str(lake)).execute(context())

    # Customers: gone from every change partition and from the current-state table (every version).
    assert _sql(f"SELECT count(*) FROM {customers} WHERE id IN ({', '.join(repr(i) for i in ids)})") == [(0,)]
    state = cs.current_state_dataset(str(lake / "current" / "customer")).to_table()  # read by DuckDB below
    assert duckdb.sql(f"SELECT count(*) FROM state WHERE id IN ({', '.join(repr(i) for i in ids)})").fetchall() \
        == [(0,)] and state.num_rows > 0
    for path in (lake / "current" / "customer").rglob("*.parquet"):
        assert not set(chosen) & set(pq.read_table(path, columns=["id"]).column("id").to_pylist()), path
    assert result["rows_erased"] >= 2 and result["table_rows_erased"] == 2 and result["table_files_vacuumed"] >= 1
    # Redemptions: still there (counts per customer unchanged), the customers' fields nulled.
    after = _sql(f"SELECT count(*), count(customer_id), count(customer_source_id), count(customer_name) FROM "
                 f"{redemptions} WHERE customer_id IN ({', '.join(repr(i) for i in chosen)})")
    assert after == [(0, 0, 0, 0)]
    assert _sql(f"SELECT count(*) FROM {redemptions} WHERE customer_id IS NULL") == [(sum(before[i] for i in chosen),)]
    assert redact["rows_erased"] == sum(before[i] for i in chosen)
    # Rewritten partitions are whole (manifest lists exactly the files, sha256 and rows match); others untouched.
    for folder in (lake / "customer", lake / "redemption"):
        for partition in folder.iterdir():
            manifest = json.loads((partition / "_manifest.json").read_text())
            assert sorted(p.name for p in partition.iterdir()) == sorted(
                ["_manifest.json", *[f["path"] for f in manifest["files"]]])
            for entry in manifest["files"]:
                body = (partition / entry["path"]).read_bytes()
                assert hashlib.sha256(body).hexdigest() == entry["sha256"]
                assert pq.read_metadata(partition / entry["path"]).num_rows == entry["rows"]
            assert manifest["rows"] == sum(f["rows"] for f in manifest["files"])
    for name, text in untouched.items():
        assert (lake / "redemption" / name / "_manifest.json").read_text() == text
    # The audit trail: what was erased where, the ids hashed, never in clear.
    records = sorted((lake / "_erasure" / "customer").glob("*.json"))
    audit = json.loads(records[0].read_text())
    assert audit["algorithm"] == "SHA-256" and audit["ids"] == sorted(
        hashlib.sha256(i.encode()).hexdigest() for i in ids)
    assert audit["counts"]["table_rows_erased"] == 2 and audit["partitions"]
    for path in (lake / "_erasure").rglob("*.json"):
        assert not [i for i in ids if i in path.read_text()]
    assert not [i for i in ids if i in json.dumps(result) + json.dumps(redact)]


def test_erasing_ids_the_lake_does_not_hold_rewrites_nothing(lake):
    manifests = {p: p.read_text() for p in lake.rglob("_manifest.json")}
    result = VoucherifyEraseRecordsOperator(task_id="e", exported_object="customer", ids=["cust_nobody"],
                                            destination=str(lake)).execute(context())
    assert result["partitions_rewritten"] == 0 and result["table_rows_erased"] == 0
    assert {p: p.read_text() for p in lake.rglob("_manifest.json")} == manifests


@pytest.mark.parametrize(("ids", "message"), [
    ([], "ids must be a non-empty list"),
    ("", "ids must be a non-empty list"),
    (["cust_1", ""], "entries at positions [1] are not"),
    ({"id": "x"}, "ids must be a non-empty list"),
])
def test_bad_id_lists_name_the_fix_without_quoting_ids(ids, message):
    with pytest.raises(VoucherifyConfigError) as error:
        parse_ids(ids)
    assert message in str(error.value) and "cust_1" not in str(error.value)


def test_ids_render_as_lists_or_text():
    assert parse_ids('["b", "a", "a"]') == ["a", "b"]
    assert parse_ids("a, b\nc") == ["a", "b", "c"]
    assert parse_ids("['a', 'b']") == ["a", "b"]


def test_bad_erasure_arguments_fail_at_parse_time():
    with pytest.raises(VoucherifyConfigError, match="action must be one of remove, redact"):
        VoucherifyEraseRecordsOperator(task_id="e", exported_object="customer", ids=["x"], destination="/tmp/l",
                                       action="forget")
    with pytest.raises(VoucherifyConfigError, match="Unknown field 'client_id' for exported object 'redemption'"):
        VoucherifyEraseRecordsOperator(task_id="e", exported_object="redemption", ids=["x"], destination="/tmp/l",
                                       match_field="client_id")


def test_a_column_landed_hashed_is_erased_with_the_key(emu, hook, tmp_path, monkeypatch):
    key = "erasure-test-hash-key-0123456789"
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_HASH_KEY", json.dumps({"conn_type": "generic", "password": key}))
    lake, day = tmp_path / "lake", DAYS[0]
    ctx = context(data_interval_start=day, data_interval_end=day + timedelta(days=1))
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="redemption",
                                               fields=["id", "date", "customer_id", "customer_name"],
                                               voucherify_conn_id=CONN_ID).execute(ctx)
    wait_done(hook, export_id)
    land(lake, export_id, exported_object="redemption", column_policies={"customer_id": "hash"},
         hash_key_conn_id="voucherify_hash_key").execute(ctx)
    files = f"read_parquet('{lake}/redemption/*/*.parquet')"
    landed_ids = {r[0] for r in _sql(f"SELECT id FROM {files}")}
    owners = {r["id"]: r["customer_id"] for r in emu.state("redemption", ["id", "customer_id"])}
    customer = owners[sorted(landed_ids)[0]]
    theirs = sum(1 for i in landed_ids if owners[i] == customer)
    digest = hmac.new(key.encode(), customer.encode(), "sha256").hexdigest()
    assert _sql(f"SELECT count(*) FROM {files} WHERE customer_id = '{digest}'") == [(theirs,)]
    result = VoucherifyEraseRecordsOperator(task_id="e", exported_object="redemption", ids=[customer],
                                            match_field="customer_id", destination=str(lake),
                                            hash_key_conn_id="voucherify_hash_key").execute(context())
    assert result["rows_erased"] == theirs and _sql(f"SELECT count(*) FROM {files} WHERE customer_id = "
                                                   f"'{digest}'") == [(0,)]
    audit = json.loads(next((lake / "_erasure" / "redemption").glob("*.json")).read_text())
    assert audit["algorithm"] == "HMAC-SHA256" and audit["ids"] == [digest]


def test_an_erasure_racing_a_landing_erases_from_what_the_landing_committed(emu, hook, tmp_path, monkeypatch):
    """A landing commits the partition while the erasure rewrites it: the erasure's commit notices (under
    the lock), rewrites from the new manifest, and the landing's files are not lost."""
    from voucherify_provider.landing import erasure as erasure_module

    lake, day = tmp_path / "lake", DAYS[0]
    ctx = context(data_interval_start=day, data_interval_end=day + timedelta(days=1))
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="redemption",
                                               voucherify_conn_id=CONN_ID).execute(ctx)
    wait_done(hook, export_id)
    land(lake, export_id, exported_object="redemption", delete_export=False).execute(ctx)
    partition = lake / "redemption" / "window_start=20240102T000000Z"
    victim = pq.read_table(next(partition.glob("*.parquet"))).column("id")[0].as_py()
    rewrite, raced = erasure_module._rewrite, []

    def racing(*args, **kwargs):
        if not raced:  # a landing of the same window commits between the erasure's read and its commit
            raced.append(land(lake, export_id, exported_object="redemption", delete_export=False).execute(ctx))
        return rewrite(*args, **kwargs)

    monkeypatch.setattr(erasure_module, "_rewrite", racing)
    result = VoucherifyEraseRecordsOperator(task_id="e", exported_object="redemption", ids=[victim],
                                            destination=str(lake)).execute(context())
    manifest = json.loads((partition / "_manifest.json").read_text())
    ids = duckdb.sql(f"SELECT id FROM read_parquet('{partition}/*.parquet')").fetchall()
    assert raced and result["rows_erased"] == 1 and victim not in {r[0] for r in ids}
    assert len(ids) == raced[0]["rows"] - 1 == manifest["rows"] and manifest["written_at"] == raced[0]["written_at"]


def test_rejected_rows_files_are_erased_too_and_an_aborted_rewrite_keeps_them(emu, hook, tmp_path, monkeypatch):
    import base64

    from voucherify_provider.landing import writer as writer_module

    lake = tmp_path / "lake"
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="customer", voucherify_conn_id=CONN_ID,
                                               fields=["id", "created_at", "email", "orders_total_amount"]
                                               ).execute(context())
    wait_done(hook, export_id)
    body = (b"ID,Created At,Email,Orders Total Amount\n"
            b"cust_a,2024-01-02T10:00:00.000Z,a@example.com,lots\n"
            b"cust_b,2024-01-02T11:00:00.000Z,b@example.com,100\n")
    emu.inject({"route": "download_export", "body_base64": base64.b64encode(body).decode(), "count": 4})
    land(lake, export_id, exported_object="customer", on_bad_value="reject").execute(context())
    partition = lake / "customer" / "window_start=20240102T000000Z"
    before = sorted(p.name for p in partition.iterdir())
    commit = writer_module.PartitionWriter.commit

    def failing(self, *args, **kwargs):
        raise OSError("the store went away mid-erasure")

    monkeypatch.setattr(writer_module.PartitionWriter, "commit", failing)
    erase = VoucherifyEraseRecordsOperator(task_id="e", exported_object="customer", ids=["cust_a"],
                                           destination=str(lake), current_state=False)
    with pytest.raises(OSError):
        erase.execute(context())
    assert sorted(p.name for p in partition.iterdir()) == before  # the live rejected-rows file included
    monkeypatch.setattr(writer_module.PartitionWriter, "commit", commit)
    assert erase.execute(context())["rows_erased"] == 1
    manifest = json.loads((partition / "_manifest.json").read_text())
    (side,) = manifest["side_files"]
    assert "cust_a" not in (partition / side["path"]).read_text() and "a@example.com" not in (
        partition / side["path"]).read_text()
    assert sorted(p.name for p in partition.iterdir()) == sorted(
        ["_manifest.json", side["path"], *[f["path"] for f in manifest["files"]]])


def test_a_table_refuses_changes_landed_under_other_policies(emu, hook, tmp_path, monkeypatch):
    from voucherify_provider.outcomes import airflow_exception

    monkeypatch.setenv("AIRFLOW_VAR_KEY", "a-hash-key-long-enough-0123456789")
    lake = tmp_path / "lake"
    first = _land_changes(hook, lake, "customer", DAYS[0])
    merge = VoucherifyMergeCurrentStateOperator(task_id="m", landed=first, exported_object="customer",
                                                destination=str(lake))
    merge.execute(context())
    day = DAYS[1]
    ctx = context(data_interval_start=day, data_interval_end=day + timedelta(days=1))
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="customer", incremental=True,
                                               fields=list(CUSTOMER.fields), voucherify_conn_id=CONN_ID).execute(ctx)
    wait_done(hook, export_id)
    hashed = land(lake, export_id, exported_object="customer", column_policies={"email": "hash"},
                  hash_key_variable="key").execute(ctx)
    merge.landed = hashed
    with pytest.raises(airflow_exception("AirflowFailException"), match="would mix clear and hashed values"):
        merge.execute(context())
    assert not cs.current_state_dataset(str(lake / "current" / "customer")).to_table().filter(
        pa.compute.equal(pa.compute.utf8_length(pa.compute.field("email")), 64)).num_rows  # nothing merged


def test_erasing_a_hashed_column_without_the_key_fails_naming_the_fix(emu, hook, tmp_path, monkeypatch):
    from voucherify_provider.outcomes import airflow_exception

    monkeypatch.setenv("AIRFLOW_VAR_KEY", "a-hash-key-long-enough-0123456789")
    lake = tmp_path / "lake"
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="redemption",
                                               voucherify_conn_id=CONN_ID).execute(context())
    wait_done(hook, export_id)
    land(lake, export_id, exported_object="redemption", column_policies={"customer_id": "hash"},
         hash_key_variable="key").execute(context())
    with pytest.raises(airflow_exception("AirflowFailException"), match="customer_id was landed hashed"):
        VoucherifyEraseRecordsOperator(task_id="e", exported_object="redemption", ids=["cust_x"],
                                       match_field="customer_id", destination=str(lake)).execute(context())
