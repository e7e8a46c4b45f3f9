"""Readers of the destination never see staged files: DuckDB, pyarrow.dataset and Spark query a partition
while a second landing of it is in flight, and after that landing is SIGKILLed, and get the committed run.

The in-flight landing runs in its own process (so it can be killed like a worker) and is held mid-download
by the emulator's ``stall`` fault, so its staged file exists without a Parquet footer.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from harness.stack import wait_until
from tests.support.operators import context, done_export, land
from voucherify_provider.landing.writer import STAGED_SUFFIX

pytestmark = pytest.mark.timeout(600)

PARTITION = "window_start=20240102T000000Z"
LAND_IN_SUBPROCESS = textwrap.dedent("""
    import sys
    from datetime import datetime, timezone
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    export_id, dest = sys.argv[1], sys.argv[2]
    op = VoucherifyDownloadToWarehouseOperator(
        task_id="land", export_id=export_id, destination=dest, voucherify_conn_id="voucherify_test",
        exported_object="redemption", row_group_rows=10)
    op.execute({"data_interval_start": datetime(2024, 1, 2, tzinfo=timezone.utc),
                "data_interval_end": datetime(2024, 1, 3, tzinfo=timezone.utc)})
""")


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """A local Spark session (pyspark + the machine's Java), quiet and offline."""
    import shutil

    if not shutil.which("java"):
        pytest.skip("no Java on this machine: `make test` installs Debian's default-jre-headless; that failed here")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("voucherify-readers")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    # py4j's finalizers log at INFO when the interpreter exits, after pytest has closed its capture streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)


def rows_seen_by_every_reader(base: Path, spark: object) -> dict[str, int]:
    """Row count of the object's folder through each reader and glob users write."""
    root = base / "redemption"
    con = duckdb.connect()

    def count(sql: str) -> int:
        return int(con.execute(sql).fetchall()[0][0])

    seen = {
        "duckdb */*.parquet": count(f"SELECT count(*) FROM read_parquet('{root}/*/*.parquet')"),
        "duckdb **/*.parquet": count(f"SELECT count(*) FROM read_parquet('{root}/**/*.parquet')"),
        "duckdb hive": count(f"SELECT count(*) FROM read_parquet('{root}/*/*.parquet', hive_partitioning=true) "
                             "WHERE window_start = '20240102T000000Z'"),
        "pyarrow.dataset": ds.dataset(str(root), format="parquet", partitioning="hive").count_rows(),
        "spark folder": spark.read.parquet(str(root)).count(),  # type: ignore[attr-defined]
        "spark glob": spark.read.parquet(f"{root}/*/*.parquet").count(),  # type: ignore[attr-defined]
    }
    con.close()
    return seen


def staged_files(partition: Path) -> list[Path]:
    return [p for p in partition.iterdir() if p.name.endswith(STAGED_SUFFIX)]


def test_readers_skip_an_in_flight_and_a_killed_landing(emu, hook, tmp_path, spark):
    committed = land(tmp_path, done_export(emu, hook), exported_object="redemption").execute(context())
    assert committed["rows"] > 0
    partition = tmp_path / "redemption" / PARTITION
    expected = dict.fromkeys(rows_seen_by_every_reader(tmp_path, spark), committed["rows"])

    second = done_export(emu, hook)
    emu.inject({"route": "download_export", "stall": 60})
    process = subprocess.Popen([sys.executable, "-c", LAND_IN_SUBPROCESS, second, str(tmp_path)],
                               env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        staged = wait_until(lambda: staged_files(partition), 120, "the second landing to stage its file")
        wait_until(lambda: emu.requests()["faults_injected"].get("scripted:stall"), 60, "the stalled download")
        # The staged file is what used to break glob readers ("No magic bytes found"): no Parquet footer yet.
        with pytest.raises(Exception, match=r"(?i)magic|footer|size"):
            pq.ParquetFile(staged[0])
        assert rows_seen_by_every_reader(tmp_path, spark) == expected  # while in flight
    finally:
        process.send_signal(signal.SIGKILL)
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, output

    assert staged_files(partition), "the killed landing left nothing staged: the test proves nothing"
    assert rows_seen_by_every_reader(tmp_path, spark) == expected  # after the kill, before any retry
    manifest = json.loads((partition / "_manifest.json").read_text())
    assert manifest["export_id"] == committed["export_id"]


def test_spark_and_duckdb_read_the_current_state_table_as_the_readme_says(tmp_path, spark):
    """The docs' offline recipes (docs/concepts/current-state.md includes them from here): Spark on the live
    files with ``basePath`` (the month comes back from the folder names) and DuckDB over the provider's
    dataset, after a schema change, equal to pyarrow."""
    import duckdb
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath
    from deltalake import DeltaTable

    from voucherify_provider import catalog
    from voucherify_provider.landing import current_state as cs

    def merge(rows: list[dict], schema: pa.Schema) -> None:
        state = cs.state_schema(schema)
        full = [{**r, "_change_at": r["created_at"], "_deleted": False, "_deleted_at": None, "_export_id": "e"}
                for r in rows]
        table = pa.Table.from_pylist(full, schema=state)
        cs.merge_rows(ObjectStoragePath(str(tmp_path / "t")), catalog.OBJECTS["order"],
                      pa.RecordBatchReader.from_batches(state, table.to_batches()), "t")

    jan, may = datetime(2024, 1, 5, tzinfo=timezone.utc), datetime(2024, 5, 5, tzinfo=timezone.utc)
    merge([{"id": "ord_a", "created_at": jan}], pa.schema([("id", pa.string()), ("created_at", cs.TIME)]))
    merge([{"id": "ord_b", "created_at": may, "status": "PAID"}],
          pa.schema([("id", pa.string()), ("created_at", cs.TIME), ("status", pa.string())]))
    path = str(tmp_path / "t")
    expected = sorted(cs.current_state_dataset(path).to_table(columns=["id", "status", "_created_month"]).to_pylist(),
                      key=lambda r: r["id"])
    assert expected == [{"id": "ord_a", "status": None, "_created_month": "2024-01"},
                        {"id": "ord_b", "status": "PAID", "_created_month": "2024-05"}]
    # --8<-- [start:read_spark]
    frame = (spark.read.option("basePath", path).option("mergeSchema", "true")  # type: ignore[attr-defined]
             .parquet(*DeltaTable(path).file_uris()))
    # --8<-- [end:read_spark]
    assert sorted((r.asDict() for r in frame.select("id", "status", "_created_month").collect()),
                  key=lambda r: r["id"]) == expected
    # --8<-- [start:read_duckdb]
    con = duckdb.connect()
    con.register("orders", cs.current_state_dataset(path))
    # --8<-- [end:read_duckdb]
    assert con.execute("select id, status, _created_month from orders order by id").fetchall() == [
        tuple(r.values()) for r in expected]
