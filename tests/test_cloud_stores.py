"""Landing on Google Cloud Storage (gs://) and Azure Blob Storage / ADLS Gen2 (abfs://, az://), through the
connections users have (``google_cloud_platform``, ``adls``), against fake-gcs-server and Azurite started
here: the scenarios tests/test_object_storage.py runs on S3, and the example DAGs under ``dag.test()``."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow.dataset as ds
import pytest

from harness.cloud_stores import GCS_ENV, AzuriteServer, GcsServer
from harness.services import MissingService
from tests.support.dag_files import load_example_dags
from tests.support.exports import wait_done
from voucherify_provider.errors import VoucherifyDownloadError
from voucherify_provider.operators.export import VoucherifyCreateExportOperator
from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

UTC = timezone.utc
CTX = {"data_interval_start": datetime(2024, 1, 2, tzinfo=UTC), "data_interval_end": datetime(2024, 1, 3, tzinfo=UTC)}
PARTITION = "window_start=20240102T000000Z"


@dataclass
class CloudStore:
    """One emulated store, as a test sees it: URLs, the Airflow connection, a filesystem to check with."""

    name: str
    scheme: str
    conn_id: str
    server: Any

    def url(self, prefix: str) -> str:
        """``<scheme>://lake/<prefix>``."""
        return f"{self.scheme}://lake/{prefix}"

    @property
    def fs(self) -> Any:
        """The emulator's fsspec filesystem (keys are ``lake/<prefix>/...``)."""
        return self.server.filesystem()

    def names(self, folder: str) -> list[str]:
        """Every object name directly in ``lake/<folder>``, hidden ones included."""
        fs = self.fs
        fs.invalidate_cache()
        try:
            return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"lake/{folder}", detail=False))
        except FileNotFoundError:  # object stores have no empty folders
            return []


@pytest.fixture(scope="module", params=["gcs", "azure"])
def cloud(request, tmp_path_factory) -> Iterator[CloudStore]:
    os.environ.update(GCS_ENV)  # before gcsfs is first imported (see harness/cloud_stores.py)
    workdir = tmp_path_factory.mktemp(request.param)
    try:
        server = GcsServer(workdir) if request.param == "gcs" else AzuriteServer(workdir)
    except MissingService as missing:  # make test installs both; say what failed where it could not
        pytest.skip(str(missing))
    with server:
        yield CloudStore(request.param, "gs" if request.param == "gcs" else "abfs",
                         f"{request.param}_lake", server)


@pytest.fixture
def store(cloud, monkeypatch) -> CloudStore:
    monkeypatch.setenv(f"AIRFLOW_CONN_{cloud.conn_id.upper()}", cloud.server.connection())
    return cloud


def create_export(hook: Any, obj: str = "redemption", context: dict[str, Any] | None = None, **kwargs: Any) -> str:
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object=obj, voucherify_conn_id="voucherify_test",
                                               **kwargs).execute(dict(context or CTX))
    wait_done(hook, export_id)
    return str(export_id)


def land(store: CloudStore, export_id: str, prefix: str, obj: str = "redemption",
         context: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict(VoucherifyDownloadToWarehouseOperator(
        task_id="l", export_id=export_id, destination=store.url(prefix), destination_conn_id=store.conn_id,
        exported_object=obj, voucherify_conn_id="voucherify_test",
        delete_export=False,  # these tests land one export again; tests/test_export_cleanup.py covers deletion
    ).execute(dict(context or CTX)))


def truth_ids(emu: Any) -> list[str]:
    return sorted(emu.ground_truth("redemption", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)["ids"])


def test_lands_and_reruns_replace(emu, hook, store):
    first = land(store, create_export(hook), "warehouse")
    second = land(store, create_export(hook), "warehouse")
    folder = f"warehouse/redemption/{PARTITION}"
    assert store.names(folder) == sorted(["_manifest.json", *[f["path"] for f in second["files"]]])
    assert first["files"][0]["path"] not in store.names(folder)
    manifest = json.loads(store.fs.cat(f"lake/{folder}/_manifest.json"))
    assert {**manifest, "partition": f"{store.scheme}://lake/{folder}"} == json.loads(json.dumps(second))
    body = store.fs.cat(f"lake/{folder}/{second['files'][0]['path']}")
    assert hashlib.sha256(body).hexdigest() == second["files"][0]["sha256"]
    table = ds.dataset("lake/warehouse/redemption", filesystem=store.fs, format="parquet",
                       partitioning="hive").to_table()
    assert sorted(table.column("id").to_pylist()) == truth_ids(emu)


def test_a_broken_download_leaves_nothing_staged(emu, hook, store):
    export_id = create_export(hook)
    land(store, export_id, "broken")
    emu.admin("POST", "faults", json=[{"route": "download_export", "truncate": True, "count": 2}])
    landed = land(store, export_id, "broken")
    assert emu.admin("GET", "requests")["faults_injected"].get("scripted:truncate") == 2
    assert store.names(f"broken/redemption/{PARTITION}") == sorted(["_manifest.json",
                                                                     *[f["path"] for f in landed["files"]]])


def test_a_failed_landing_leaves_the_previous_run_whole(emu, hook, store):
    """Every try of the download breaks off: the task fails, its staged files are removed, and the partition
    still holds exactly the previous run's files and manifest."""
    export_id = create_export(hook)
    before = land(store, export_id, "failed")
    emu.admin("POST", "faults", json=[{"route": "download_export", "truncate": True, "count": 10}])
    with pytest.raises(VoucherifyDownloadError, match="broke off after"):
        land(store, export_id, "failed")
    folder = f"failed/redemption/{PARTITION}"
    assert store.names(folder) == sorted(["_manifest.json", *[f["path"] for f in before["files"]]])
    assert json.loads(store.fs.cat(f"lake/{folder}/_manifest.json"))["files"] == before["files"]


def test_commit_lock_is_an_exclusive_create(store):
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.writer import LOCK, CommitLock

    partition = ObjectStoragePath(store.url(f"locks/{PARTITION}/"), conn_id=store.conn_id)
    with CommitLock(partition, "first", timeout=5):
        assert LOCK in store.names(f"locks/{PARTITION}")
        # ifGenerationMatch=0 (GCS) / If-None-Match: * (Azure) refuses a second holder: it waits, then times out.
        with pytest.raises(TimeoutError, match="delete the lock file"):
            with CommitLock(partition, "second", timeout=0.5):
                pass
    assert LOCK not in store.names(f"locks/{PARTITION}")


def test_two_runs_of_one_window_at_once_leave_one_whole_run(emu, hook, store):
    """Two landings of the same window at the same moment: the partition ends as exactly one of them."""
    exports = [create_export(hook), create_export(hook)]
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run(export_id: str) -> None:
        try:
            results.append(land(store, export_id, "race"))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(e,)) for e in exports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(results) == 2
    folder = f"race/redemption/{PARTITION}"
    manifest = json.loads(store.fs.cat(f"lake/{folder}/_manifest.json"))
    assert manifest["export_id"] in exports
    assert store.names(folder) == sorted(["_manifest.json", *[f["path"] for f in manifest["files"]]])
    table = ds.dataset(f"lake/{folder}", filesystem=store.fs, format="parquet").to_table()
    assert sorted(table.column("id").to_pylist()) == truth_ids(emu)


def test_readers_see_the_partitions_through_the_store(emu, hook, store):
    """DuckDB (through the store's fsspec filesystem) and pyarrow read the landed partitions, and neither
    sees staged files."""
    import duckdb

    land(store, create_export(hook), "readers")
    con = duckdb.connect()
    con.register_filesystem(store.fs)
    glob = f"{store.scheme}://lake/readers/redemption/*/*.parquet"
    ids = sorted(r[0] for r in con.execute(f"SELECT id FROM read_parquet('{glob}', hive_partitioning=true)").fetchall())
    assert ids == truth_ids(emu)
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.sink import arrow_filesystem

    filesystem, root = arrow_filesystem(ObjectStoragePath(store.url("readers/redemption"), conn_id=store.conn_id))
    table = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("id").to_pylist()) == ids


def test_lineage_and_asset_names_follow_each_store(store):
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.destination import asset_for, lineage_dataset_name

    path = ObjectStoragePath(store.url("wh/redemption"), conn_id=store.conn_id)
    if store.name == "gcs":
        assert lineage_dataset_name(path) == ("gs://lake", "wh/redemption")
        assert asset_for("gs://lake/wh", "redemption").uri == "gs://lake/wh/redemption"
    else:  # OpenLineage's ADLS Gen2 form names the account, which only the connection knows
        assert lineage_dataset_name(path) == ("abfss://lake@devstoreaccount1.dfs.core.windows.net", "wh/redemption")
        assert asset_for("az://lake/wh", "redemption").uri == "abfs://lake/wh/redemption"


def test_change_windows_merge_into_a_current_state_table(emu, hook, store):
    """The Delta current-state table on the store: delta-rs gets the connection's credentials and endpoint,
    merges under the exclusive-create lock, and merging the same window again changes nothing."""
    from airflow.sdk import ObjectStoragePath
    from deltalake import DeltaTable

    from voucherify_provider.landing.current_state import current_state_dataset, delta_location
    from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator

    def land_changes(start: str, end: str) -> dict[str, Any]:
        context = {"data_interval_start": datetime.fromisoformat(start),
                   "data_interval_end": datetime.fromisoformat(end)}
        return land(store, create_export(hook, "customer", context, incremental=True), "warehouse", "customer", context)

    merge = VoucherifyMergeCurrentStateOperator(task_id="m", landed=[], exported_object="customer",
                                                destination=store.url("warehouse"), destination_conn_id=store.conn_id)
    landed = [land_changes("2024-01-01T00:00:00+00:00", "2024-01-05T00:00:00+00:00"),
              land_changes("2024-01-05T00:00:00+00:00", "2024-01-30T00:00:00+00:00")]
    merge.landed = landed[::-1]  # merged oldest first whatever the order given
    counts = merge.execute({})
    assert [c["num_target_rows_inserted"] for c in counts] == [landed[0]["rows"], landed[1]["rows"]]
    table_path = ObjectStoragePath(store.url("warehouse/current/customer"), conn_id=store.conn_id)
    uri, options = delta_location(table_path)
    table = DeltaTable(uri, storage_options=options).to_pyarrow_table()
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in emu.state("customer", ["id"]))
    assert "_commit.lock" not in store.names("warehouse/current/customer")  # released
    rows = current_state_dataset(table_path).to_table(columns=["id", "created_at", "_created_month"]).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(table.column("id").to_pylist())
    assert all(r["_created_month"] == r["created_at"].strftime("%Y-%m") for r in rows)
    merge.landed = landed[1]
    assert merge.execute({})[0].get("num_target_rows_updated", 0) == 0


@pytest.fixture
def cloud_example_dags(airflow_db, emu, store, tmp_path, monkeypatch):
    prefix = f"dags-{tmp_path.name}"
    monkeypatch.setenv("VOUCHERIFY_POLL_INTERVAL", "0.5")
    for module, _ in load_example_dags(tmp_path, monkeypatch, destination=store.url(prefix),
                                       destination_conn_id=store.conn_id):
        yield module, prefix


def test_example_dags_land_to_the_store_under_dag_test(cloud_example_dags, emu, store):
    """Done means: the windowed and the change-window example DAGs, run by Airflow, land on the store
    exactly the emulator's ground truth, and the current-state table holds every changed customer."""
    from airflow.sdk import ObjectStoragePath
    from deltalake import DeltaTable

    from voucherify_provider.landing.current_state import delta_location

    module, prefix = cloud_example_dags
    run = module.voucherify_redemption.test(logical_date=datetime(2024, 1, 3, tzinfo=UTC))
    assert str(run.state) == "success"
    folder = f"lake/{prefix}/redemption/{PARTITION}"
    ids = ds.dataset(folder, filesystem=store.fs, format="parquet").to_table().column("id").to_pylist()
    assert sorted(ids) == truth_ids(emu) and json.loads(store.fs.cat(f"{folder}/_manifest.json"))["rows"] == len(ids)

    run = module.voucherify_customer.test(logical_date=datetime(2024, 1, 4, tzinfo=UTC))  # a Thursday
    assert str(run.state) == "success"
    truth = emu.ground_truth("customer", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z", ids=True,
                             placed_by="last_change")
    folder = f"lake/{prefix}/customer/window_start=20240103T000000Z"
    manifest = json.loads(store.fs.cat(f"{folder}/_manifest.json"))
    assert manifest["mode"] == "changes" and manifest["rows"] == truth["count"] > 0
    uri, options = delta_location(ObjectStoragePath(store.url(f"{prefix}/current/customer"), conn_id=store.conn_id))
    table = DeltaTable(uri, storage_options=options).to_pyarrow_table()
    assert sorted(table.column("id").to_pylist()) == sorted(truth["ids"])


KILLED_WRITER = """
import json, os, sys, time
import pyarrow as pa
from airflow.sdk import ObjectStoragePath
from voucherify_provider.landing.writer import PartitionWriter

partition = ObjectStoragePath(sys.argv[1], conn_id=sys.argv[2])
schema = pa.schema([("id", pa.string())])
writer = PartitionWriter(partition, schema, metadata={}, owner="killedtry01")
part = writer.part("part-00000.parquet")
part.write(pa.record_batch([pa.array(["killed-1", "killed-2"])], schema=schema))
writer.add(part.close())
print("STAGED", flush=True)
time.sleep(300)  # killed here, before the commit
"""


def test_a_killed_landing_leaves_nothing_visible_and_its_retry_sweeps_it(emu, hook, store, tmp_path):
    """A landing process SIGKILLed with its file staged: readers still see exactly the previous run, and a
    retry of the same task instance (same owner) removes the staged file and commits whole."""
    import subprocess
    import sys

    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from harness.paths import REPO_ROOT
    from voucherify_provider.landing.writer import PartitionWriter

    before = land(store, create_export(hook), "killed")
    folder = f"killed/redemption/{PARTITION}"
    script = tmp_path / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, str(script), store.url(folder), store.conn_id], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "STAGED"
    finally:
        child.kill()
        child.wait(30)
    names = store.names(folder)
    staged = [n for n in names if n.startswith(".tmp-killedtry01-")]
    assert len(staged) == 1  # hidden: not *.parquet, so no reader's glob matches it
    assert [n for n in names if not n.startswith(".tmp-")] == sorted(
        ["_manifest.json", *[f["path"] for f in before["files"]]])

    schema = pa.schema([("id", pa.string())])
    retry = PartitionWriter(ObjectStoragePath(store.url(folder), conn_id=store.conn_id), schema, metadata={},
                            owner="killedtry01")
    assert retry.sweep_staged() == 1
    part = retry.part("part-00000.parquet")
    part.write(pa.record_batch([pa.array(["retried"])], schema=schema))
    retry.add(part.close())
    manifest = retry.commit({"export_id": "retry"})
    assert store.names(folder) == ["_manifest.json", "part-00000.parquet"] and manifest["rows"] == 1
