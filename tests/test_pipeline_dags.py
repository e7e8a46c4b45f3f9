"""The three building blocks composed in real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.support.dag_files import DagFile, pipeline_dag

UTC = timezone.utc
JAN3 = datetime(2024, 1, 3, tzinfo=UTC)  # the run whose data interval is [Jan 2, Jan 3)


@pytest.fixture
def dag_file(airflow_db):
    made: list[DagFile] = []

    def make(body: str) -> DagFile:
        made.append(DagFile(body))
        return made[-1]

    yield make
    for dag in made:
        dag.remove()


def landed_ids(root, obj: str, id_field: str = "id") -> list[str]:
    table = ds.dataset(str(root / obj), format="parquet", partitioning="hive").to_table()
    return table.column(id_field).to_pylist()


def test_poke_pipeline_lands_the_window_typed(dag_file, emu, tmp_path):
    dag = dag_file(pipeline_dag("redemption", tmp_path, create=", fields=['id', 'date', 'order_amount', "
                                "'result', 'metadata', 'customer_name']"))
    run = dag.test(JAN3)
    assert dag.states(run) == {"create": "success", "wait": "success", "land": "success"}
    partition = tmp_path / "redemption" / "window_start=20240102T000000Z"
    manifest = json.loads((partition / "_manifest.json").read_text())
    truth = emu.ground_truth("redemption", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)
    assert sorted(landed_ids(tmp_path, "redemption")) == sorted(truth["ids"])
    assert manifest["rows"] == truth["count"] and manifest["mode"] == "window"
    assert manifest["window_start"] == "2024-01-02T00:00:00+00:00"
    assert [f["path"] for f in manifest["files"]] == sorted(p.name for p in partition.glob("*.parquet"))
    table = ds.dataset(str(partition), format="parquet").to_table()
    assert table.schema.field("date").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("order_amount").type == pa.decimal128(20, 2)
    con = duckdb.connect()
    count, minimum = con.execute(
        f"select count(*), min(epoch_ms(date)) from read_parquet('{tmp_path}/redemption/*/*.parquet', "
        "hive_partitioning=1)"
    ).fetchone()
    jan2 = int(datetime(2024, 1, 2, tzinfo=UTC).timestamp() * 1000)
    assert count == truth["count"] and minimum == jan2  # the midnight record belongs to this window
    xcom = dag.xcom(run, "land")
    assert xcom["rows"] == truth["count"] and emu.config.app_token not in json.dumps(xcom)
    events = dag.asset_events(f"file://{tmp_path}/redemption")
    assert events and events[-1]["rows"] == truth["count"] and events[-1]["partition"].endswith(
        "window_start=20240102T000000Z")


def test_deferrable_create_and_sensor(dag_file, emu, tmp_path):
    emu.configure(in_progress_seconds=1.5)
    dag = dag_file(pipeline_dag("voucher_transactions", tmp_path,
                                create=", wait_for_completion=True, deferrable=True, poll_interval=0.2",
                                sensor=", deferrable=True"))
    run = dag.test(JAN3)
    assert dag.states(run) == {"create": "success", "wait": "success", "land": "success"}
    truth = emu.ground_truth("voucher_transactions", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)
    assert sorted(landed_ids(tmp_path, "voucher_transactions")) == sorted(truth["ids"])


def test_export_error_is_recovered_by_a_task_retry(dag_file, emu, tmp_path):
    emu.inject({"route": "create_export", "export_error": True})
    dag = dag_file(pipeline_dag("order", tmp_path, with_sensor=False,
                                create=", wait_for_completion=True, poll_interval=0.1, retries=1, "
                                       "retry_delay=timedelta(seconds=0)"))
    run = dag.test(JAN3)
    assert dag.states(run) == {"create": "success", "land": "success"}
    assert emu.requests()["counts"]["create_export"] == 2
    truth = emu.ground_truth("order", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)
    assert sorted(landed_ids(tmp_path, "order")) == sorted(truth["ids"])


def test_sensor_fails_fast_on_error_with_advice(dag_file, emu, tmp_path, caplog):
    emu.inject({"route": "create_export", "export_error": True})
    dag = dag_file(pipeline_dag("customer", tmp_path, sensor=", retries=2"))
    run = dag.test(JAN3)
    states = dag.states(run)
    assert states["wait"] == "failed" and states["land"] == "upstream_failed"
    assert emu.requests()["counts"]["get_export"] <= 3  # failed at once, not at the 60 s timeout
    assert not (tmp_path / "customer").exists() or not list((tmp_path / "customer").rglob("*.parquet"))


def test_snapshot_of_points_expiration(dag_file, emu, tmp_path):
    dag = dag_file(pipeline_dag("points_expiration", tmp_path))
    run = dag.test(JAN3)
    assert dag.states(run)["land"] == "success"
    manifest = json.loads((tmp_path / "points_expiration" / "window_start=20240102T000000Z" /
                           "_manifest.json").read_text())
    assert manifest["mode"] == "snapshot" and manifest["rows"] == emu.ground_truth("points_expiration")["count"]


def test_reschedule_mode_sensor(dag_file, emu, tmp_path):
    emu.configure(in_progress_seconds=1.0)
    dag = dag_file(pipeline_dag("publication", tmp_path, sensor=", mode='reschedule'"))
    run = dag.test(JAN3)
    assert dag.states(run) == {"create": "success", "wait": "success", "land": "success"}
    assert emu.requests()["counts"]["get_export"] >= 2  # poked more than once, rescheduled in between
    truth = emu.ground_truth("publication", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)
    assert sorted(landed_ids(tmp_path, "publication", "code")) == sorted(truth["ids"])
