"""Landing on object storage: s3:// through ObjectStoragePath and a connection, against moto's S3 server."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow.dataset as ds
import pytest

from harness.services import S3Server
from tests.support.exports import wait_done
from voucherify_provider.operators.export import VoucherifyCreateExportOperator
from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

UTC = timezone.utc
CTX = {"data_interval_start": datetime(2024, 1, 2, tzinfo=UTC), "data_interval_end": datetime(2024, 1, 3, tzinfo=UTC)}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def s3_endpoint(s3_server):
    return s3_server.endpoint


@pytest.fixture
def s3(s3_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_LAKE", s3_server.connection())
    return s3_server.filesystem()


def test_lands_on_s3_and_reruns_replace(emu, hook, s3):
    def run_once() -> dict:
        export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="redemption",
                                                   voucherify_conn_id="voucherify_test").execute(dict(CTX))
        wait_done(hook, export_id)
        return VoucherifyDownloadToWarehouseOperator(
            task_id="l", export_id=export_id, destination="s3://lake/warehouse", destination_conn_id="aws_lake",
            exported_object="redemption", voucherify_conn_id="voucherify_test").execute(dict(CTX))

    first = run_once()
    second = run_once()
    partition = "lake/warehouse/redemption/window_start=20240102T000000Z"
    names = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(partition))
    assert names == sorted(["_manifest.json", *[f["path"] for f in second["files"]]])
    assert first["files"][0]["path"] not in names
    manifest = json.loads(s3.cat(f"{partition}/_manifest.json"))
    assert {**manifest, "partition": f"s3://{partition}"} == json.loads(json.dumps(second))  # XCom: + where
    table = ds.dataset("lake/warehouse/redemption", filesystem=s3, format="parquet", partitioning="hive").to_table()
    truth = emu.ground_truth("redemption", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)
    assert sorted(table.column("id").to_pylist()) == sorted(truth["ids"])
    import hashlib

    body = s3.cat(f"{partition}/{second['files'][0]['path']}")
    assert hashlib.sha256(body).hexdigest() == second["files"][0]["sha256"]


def test_a_broken_download_leaves_nothing_staged_on_s3(emu, hook, s3):
    """A re-run of a landed window whose download breaks off half-way: the part is fetched again and the
    abandoned staged file (written by the native S3 client, so unseen by s3fs's cached listing of the
    partition) is deleted, not left visible beside the data."""
    export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="redemption",
                                               voucherify_conn_id="voucherify_test").execute(dict(CTX))
    wait_done(hook, export_id)

    def land() -> dict:
        return VoucherifyDownloadToWarehouseOperator(
            task_id="l", export_id=export_id, destination="s3://lake/broken", destination_conn_id="aws_lake",
            exported_object="redemption", voucherify_conn_id="voucherify_test",
            delete_export=False).execute(dict(CTX))  # landed twice

    land()
    emu.admin("POST", "faults", json=[{"route": "download_export", "truncate": True, "count": 2}])
    landed = land()
    assert emu.admin("GET", "requests")["faults_injected"].get("scripted:truncate") == 2
    partition = "lake/broken/redemption/window_start=20240102T000000Z"
    names = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(partition, refresh=True))
    assert names == sorted(["_manifest.json", *[f["path"] for f in landed["files"]]])


def test_commit_lock_is_exclusive_on_s3(s3):
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.writer import LOCK, CommitLock

    partition = ObjectStoragePath("s3://lake/locks/window_start=20240102T000000Z/", conn_id="aws_lake")
    with CommitLock(partition, "first", timeout=5):
        assert s3.exists(f"lake/locks/window_start=20240102T000000Z/{LOCK}")
        # A conditional put (If-None-Match: *) refuses a second holder: it waits, then times out.
        with pytest.raises(TimeoutError, match="delete the lock file"):
            with CommitLock(partition, "second", timeout=0.5):
                pass
    assert not s3.exists(f"lake/locks/window_start=20240102T000000Z/{LOCK}")


@pytest.mark.parametrize("proxied", [False, True])
def test_s3_files_are_written_natively_unless_fsspec_must(s3, s3_endpoint, monkeypatch, proxied):
    """Parquet goes to S3 through pyarrow's native S3 stream with the connection's credentials; a setting
    pyarrow cannot carry (here a proxy) sends it through fsspec instead. Either way the bytes and hash match."""
    import hashlib

    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.sink import HashedOutput

    if proxied:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_PROXIED", json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1",
                      "config_kwargs": {"proxies": {}}}}))
    conn_id = "aws_proxied" if proxied else "aws_lake"
    path = ObjectStoragePath(f"s3://lake/native/{conn_id}.bin", conn_id=conn_id)
    output = HashedOutput(path)
    assert output.native is not proxied
    payload = bytes(range(256)) * 50_000  # 12.8 MB: more than one buffer flush and one multipart part
    with pa.input_stream(pa.py_buffer(payload)) as source:
        while chunk := source.read(3 << 20):
            output.stream.write(chunk)
    size, sha256 = output.close()
    body = s3.cat(f"lake/native/{conn_id}.bin")
    assert (size, sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert body == payload


def test_change_windows_merge_into_a_current_state_table_on_s3(emu, hook, s3, s3_endpoint):
    """The Delta current-state table on S3: delta-rs gets the connection's credentials and endpoint, merges
    under the conditional-put lock, and merging the same window again changes nothing."""
    from deltalake import DeltaTable

    from voucherify_provider.operators.current_state import VoucherifyMergeCurrentStateOperator

    def land(start: str, end: str) -> dict:
        context = {"data_interval_start": datetime.fromisoformat(start),
                   "data_interval_end": datetime.fromisoformat(end)}
        export_id = VoucherifyCreateExportOperator(task_id="c", exported_object="customer", incremental=True,
                                                   voucherify_conn_id="voucherify_test").execute(dict(context))
        wait_done(hook, export_id)
        return VoucherifyDownloadToWarehouseOperator(
            task_id="l", export_id=export_id, destination="s3://lake/warehouse", destination_conn_id="aws_lake",
            exported_object="customer", voucherify_conn_id="voucherify_test").execute(dict(context))

    merge = VoucherifyMergeCurrentStateOperator(task_id="m", landed=[], exported_object="customer",
                                                destination="s3://lake/warehouse", destination_conn_id="aws_lake")
    landed = [land("2024-01-01T00:00:00+00:00", "2024-01-05T00:00:00+00:00"),
              land("2024-01-05T00:00:00+00:00", "2024-01-30T00:00:00+00:00")]
    assert [m["partition"] for m in landed] == ["s3://lake/warehouse/customer/window_start=20240101T000000Z",
                                                "s3://lake/warehouse/customer/window_start=20240105T000000Z"]
    merge.landed = landed[::-1]  # given newest first: merged oldest first, and the order would not matter
    counts = merge.execute({})
    assert [c["num_target_rows_inserted"] for c in counts] == [landed[0]["rows"], landed[1]["rows"]]
    options = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true"}
    table = DeltaTable("s3://lake/warehouse/current/customer", storage_options=options).to_pyarrow_table()
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in emu.state("customer", ["id"]))
    assert not s3.exists("lake/warehouse/current/customer/_commit.lock")  # the lock is released
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.current_state import current_state_dataset

    read = current_state_dataset(ObjectStoragePath("s3://lake/warehouse/current/customer", conn_id="aws_lake"))
    rows = read.to_table(columns=["id", "created_at", "_created_month"]).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(table.column("id").to_pylist())
    assert all(r["_created_month"] == r["created_at"].strftime("%Y-%m") for r in rows)
    merge.landed = landed[1]
    assert merge.execute({})[0].get("num_target_rows_updated", 0) == 0
