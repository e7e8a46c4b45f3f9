"""The example DAGs with VOUCHERIFY_COLUMN_POLICIES=personal_data under ``dag.test()``: personal columns are
hashed or dropped before anything lands, hashes join across objects, no customer email and no key is in
any log, the metadata database (XComs, rendered fields) or the lake, and Voucherify keeps no export."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.support.dag_files import load_example_dags
from tests.support.warehouse_checks import files_under, secrets_found
from voucherify_provider import catalog

pytestmark = pytest.mark.e2e

KEY = "example-dags-hash-key-7f3a9c1e5b"
DAY = datetime(2024, 1, 3, tzinfo=timezone.utc)  # a Wednesday: the customer DAG merges, no reconcile


@pytest.fixture
def private_dags(airflow_db, emu, tmp_path, monkeypatch):
    monkeypatch.setenv("VOUCHERIFY_COLUMN_POLICIES", "personal_data")
    monkeypatch.setenv("VOUCHERIFY_HASH_KEY_VARIABLE", "voucherify_hash_key")
    monkeypatch.setenv("AIRFLOW_VAR_VOUCHERIFY_HASH_KEY", KEY)
    yield from load_example_dags(tmp_path, monkeypatch)


def _parquet_values(lake: Path) -> set[str]:
    """Every string value of every landed Parquet file (compressed pages are not greppable as bytes)."""
    values: set[str] = set()
    for path in lake.rglob("*.parquet"):
        for column in pq.read_table(path).columns:
            if str(column.type) == "string":
                values.update(v for v in column.to_pylist() if v)
    return values


def test_personal_data_is_hashed_or_dropped_and_never_leaks(private_dags, emu, capfd):
    module, lake = private_dags
    for dag in (module.voucherify_customer, module.voucherify_redemption):
        run = dag.test(logical_date=DAY)
        assert str(run.state) == "success", dag.dag_id
    output = capfd.readouterr()

    customer = catalog.OBJECTS["customer"]
    files = f"read_parquet('{lake}/customer/*/*.parquet')"
    columns = [r[0] for r in duckdb.sql(f"DESCRIBE SELECT * FROM {files}").fetchall()]
    dropped = [f for f, p in customer.personal.items() if p == "drop"]
    assert columns and not set(dropped) & set(columns) and "email" in columns
    assert duckdb.sql(f"SELECT count(*) FROM {files} WHERE length(email) <> 64").fetchall() == [(0,)]
    # A redemption's customer_source_id hashes like its customer's source_id: joins still work.
    joined = duckdb.sql(
        f"SELECT count(*), count(*) FILTER (WHERE c.source_id = r.customer_source_id) FROM {files} c "
        f"JOIN read_parquet('{lake}/redemption/*/*.parquet') r ON r.customer_id = c.id").fetchall()
    assert joined[0][0] > 0 and joined[0][0] == joined[0][1]
    state = duckdb.sql(f"SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet("
                       f"'{lake}/current/customer/*/*.parquet'))").fetchall()
    assert not {"address_line_1", "birthdate"} & {r[0] for r in state}

    # The leak scan: every customer's email, and the key, nowhere.
    emails = [r["email"] for r in emu.state("customer", ["email"]) if r["email"]]
    assert len(emails) > 40
    home = Path(os.environ["AIRFLOW_HOME"])
    assert "Landed" in output.out  # the run's log is what was captured
    logged = output.out + output.err
    assert [e for e in emails if e in logged] == [] and KEY not in logged
    assert not set(emails) & _parquet_values(lake)
    text_roots = [p for p in files_under([lake, home]) if p.suffix != ".parquet"]
    assert secrets_found(text_roots, [*emails, KEY]) == []
    assert secrets_found([p for p in files_under([lake]) if p.suffix == ".parquet"], [KEY]) == []
    # Voucherify keeps no export of either run.
    ledger = emu.export_ledger()
    assert ledger["created"] >= 2 and ledger["remaining"] == 0
