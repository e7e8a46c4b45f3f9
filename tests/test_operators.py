"""Operators called directly (no scheduler): validation, resumption, landing semantics."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow.dataset as ds
import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.support.operators import JAN2, JAN3, UTC, context, create, done_export, land
from voucherify_provider.catalog import CatalogError
from voucherify_provider.errors import VoucherifyConfigError, VoucherifyExportFailedError
from voucherify_provider.sensors.export import VoucherifyExportDoneSensor
from voucherify_provider.window import Window

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"exported_object": "redemptions"}, CatalogError, "Did you mean 'redemption'"),
        ({"fields": ["id", "vouchr_code"]}, CatalogError, "Unknown field 'vouchr_code'.*Allowed fields"),
        ({"order": "amount"}, CatalogError, "order 'amount' is not allowed for 'redemption'; allowed: id"),
        ({"exported_object": "points_expiration", "windowed": True}, VoucherifyConfigError, "set windowed=False"),
        ({"filters": {"result": "SUCCESS"}}, CatalogError, "must look like"),
        ({"fields": ["id", "id"]}, CatalogError, "repeat id"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs, error, message):
    with pytest.raises(error, match=message):
        create(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_start": datetime(2024, 1, 2), "window_end": JAN3}, "naive"),
        ({"window_start": JAN3, "window_end": JAN2}, "not after window_start"),
        ({"exported_object": "points_expiration", "window_start": JAN2, "window_end": JAN3}, "is a snapshot"),
        ({"exported_object": "{{ params.obj }}"}, "Unknown exported object 'not-rendered'"),
    ],
)
def test_bad_windows_fail_before_any_call(emu, kwargs, message):
    op = create(**kwargs)
    if op.exported_object.startswith("{{"):
        op.exported_object = "not-rendered"
    with pytest.raises(AirflowFailException, match=message) as caught:  # fails the task, no retries
        op.execute(context())
    assert type(caught.value) is AirflowFailException
    assert emu.requests()["counts"] == {}


def test_zero_length_interval_fails_loudly(emu):
    with pytest.raises(AirflowFailException, match="CronDataIntervalTimetable"):
        create().execute(context(data_interval_end=JAN2))
    assert emu.requests()["counts"] == {}


def test_window_request_adds_the_creation_field(emu):
    op = create(fields=["id", "result"])
    request = op.plan(context())
    assert request["fields"] == ["id", "result", "date"]
    assert request["filters"]["created_at"]["conditions"]["$before"] == ["2024-01-03T00:00:00.000Z"]


def test_retry_after_crash_reconnects_to_the_same_export(emu):
    emu.configure(scheduled_seconds=30)
    ctx = context()
    first = create().execute(ctx)
    assert ctx["task_state_store"]["voucherify_export_id"] == {"export_id": first, "clear_number": 0}
    again = create().execute(ctx)  # the next try of the same task instance
    assert again == first and emu.requests()["counts"]["create_export"] == 1


def test_cleared_run_makes_a_fresh_export(emu):
    ctx = context()
    first = create().execute(ctx)
    ctx["dag_run"] = type("DagRun", (), {"clear_number": 1})()  # the run was cleared / reprocessed
    fresh = create().execute(ctx)
    assert fresh != first and emu.requests()["counts"]["create_export"] == 2


def test_retry_after_error_export_creates_a_fresh_one(emu):
    emu.inject({"route": "create_export", "export_error": True})
    ctx = context()
    op = create(wait_for_completion=True, poll_interval=0.05)
    with pytest.raises(VoucherifyExportFailedError, match="ended in ERROR"):  # retryable: the retry re-exports
        op.execute(ctx)
    failed = ctx["task_state_store"]["voucherify_export_id"]["export_id"]
    second = create(wait_for_completion=True, poll_interval=0.05).execute(ctx)
    assert second != failed and emu.requests()["counts"]["create_export"] == 2


def test_sensor_unknown_export_fails_at_once(emu):
    sensor = VoucherifyExportDoneSensor(task_id="wait", export_id="exp_nope", voucherify_conn_id="voucherify_test",
                                        poke_interval=0.1, timeout=30)
    with pytest.raises(AirflowFailException, match="exp_nope does not exist"):
        sensor.execute(context())


def test_sensor_timeout_says_how_long_and_last_status(emu):
    emu.configure(scheduled_seconds=60)
    export_id = create().execute(context())
    sensor = VoucherifyExportDoneSensor(task_id="wait", export_id=export_id, voucherify_conn_id="voucherify_test",
                                        poke_interval=0.1, timeout=0.5)
    from airflow.sdk.exceptions import AirflowSensorTimeout

    with pytest.raises(AirflowSensorTimeout, match=f"Export {export_id} was still SCHEDULED.*timed out"):
        sensor.execute(context())


def test_rerun_replaces_the_window_whole(emu, hook, tmp_path):
    first = done_export(emu, hook)
    land(tmp_path, first, exported_object="redemption").execute(context())
    second = done_export(emu, hook)
    manifest = land(tmp_path, second, exported_object="redemption").execute(context())
    partition = tmp_path / "redemption" / "window_start=20240102T000000Z"
    assert sorted(p.name for p in partition.iterdir()) == sorted(["_manifest.json",
                                                                   *[f["path"] for f in manifest["files"]]])
    assert all(second in f["path"] for f in manifest["files"])
    truth = emu.ground_truth("redemption", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z")
    assert ds.dataset(str(tmp_path / "redemption"), partitioning="hive").count_rows() == truth["count"]


def test_two_runs_of_one_window_at_once_leave_the_last_manifest_whole(emu, hook, tmp_path):
    import threading

    emu.configure(chunk_rows=9)  # several files per run, so a mix would show
    exports = [done_export(emu, hook) for _ in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(export_id: str) -> None:
        try:
            start.wait()
            land(tmp_path, export_id, exported_object="redemption", delete_export=False).execute(context())
        except BaseException as err:
            errors.append(err)

    for _ in range(3):
        threads = [threading.Thread(target=run, args=(e,)) for e in exports]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        partition = tmp_path / "redemption" / "window_start=20240102T000000Z"
        manifest = json.loads((partition / "_manifest.json").read_text())
        assert manifest["export_id"] in exports and len(manifest["files"]) > 1
        assert sorted(p.name for p in partition.iterdir()) == sorted(
            ["_manifest.json", *[f["path"] for f in manifest["files"]]])  # one run's files, whole
        assert all(manifest["export_id"] in f["path"] for f in manifest["files"])
        ids = ds.dataset(str(partition), format="parquet").to_table().column("id").to_pylist()
        truth = emu.ground_truth("redemption", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)
        assert sorted(ids) == sorted(truth["ids"])


def test_chunked_result_lands_as_one_dataset_and_truncation_is_retried(emu, hook, tmp_path):
    emu.configure(chunk_rows=7)
    export_id = done_export(emu, hook)
    emu.inject({"route": "download_export", "truncate": True})
    manifest = land(tmp_path, export_id).execute(context())
    truth = emu.ground_truth("redemption", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ids=True)
    assert len(manifest["files"]) > 1 and manifest["rows"] == truth["count"]
    table = ds.dataset(str(tmp_path / "redemption"), partitioning="hive").to_table()
    assert sorted(table.column("id").to_pylist()) == sorted(truth["ids"])
    assert emu.requests()["faults_injected"] == {"scripted:truncate": 1}
    assert not [p for p in (tmp_path / "redemption").rglob(".tmp-*")]


def test_progress_is_logged(emu, hook, tmp_path, capsys):
    export_id = done_export(emu, hook)
    land(tmp_path, export_id, progress_every_seconds=0).execute(context())
    logged = capsys.readouterr().out  # Airflow's structlog writes task logs to stdout outside a task runner
    assert "MB downloaded" in logged and "MB/s" in logged
    assert "token=" not in logged.replace("token=***", "")


def test_empty_window_lands_an_empty_file_with_the_schema(emu, hook, tmp_path):
    empty = {"window_start": datetime(2025, 6, 1, tzinfo=UTC), "window_end": datetime(2025, 6, 2, tzinfo=UTC)}
    export_id = done_export(emu, hook, fields=["id", "order_amount"], **empty)
    manifest = land(tmp_path, export_id, **empty).execute(context())
    assert manifest["rows"] == 0 and len(manifest["files"]) == 1
    table = ds.dataset(str(tmp_path / "redemption"), format="parquet").to_table()
    assert table.num_rows == 0 and table.schema.names == ["id", "order_amount", "date"]


def test_wrong_window_or_object_is_refused(emu, hook, tmp_path):
    export_id = done_export(emu, hook)
    other = {"window_start": JAN3, "window_end": datetime(2024, 1, 4, tzinfo=UTC)}
    with pytest.raises(AirflowFailException, match="not this task's window"):
        land(tmp_path, export_id, **other).execute(context())
    with pytest.raises(AirflowFailException, match="exports 'redemption', but this task lands 'order'"):
        land(tmp_path, export_id, exported_object="order").execute(context())
    assert not list(tmp_path.rglob("*.parquet"))


def test_destination_under_a_file_fails_before_any_call(emu, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="Cannot write to destination"):
        land(blocker, "exp_x", exported_object="redemption").execute(context())
    assert emu.requests()["counts"] == {}


def test_manifest_and_xcom_hold_no_secrets(emu, hook, tmp_path):
    export_id = done_export(emu, hook)
    manifest = land(tmp_path, export_id).execute(context())
    secrets = [emu.config.app_token, *emu.admin("GET", "secrets")["download_tokens"]]
    text = json.dumps(manifest) + "".join(p.read_text(errors="ignore") for p in tmp_path.rglob("_manifest.json"))
    text += "".join(p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*.parquet"))
    assert not any(s in text for s in secrets)


def test_dataframe_reading_shares_the_parser(emu, hook):
    export_id = done_export(emu, hook, fields=["id", "order_amount", "result"])
    # --8<-- [start:read_dataframe]
    window = Window(JAN2, JAN3)
    frame = hook.read_export_dataframe(export_id, window=window)
    # --8<-- [end:read_dataframe]
    truth = emu.ground_truth("redemption", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z")
    assert len(frame) == truth["count"]
    assert str(frame["order_amount"].dtype).startswith("decimal128(20, 2)")
    assert str(frame["date"].dtype) == "timestamp[ms, tz=UTC][pyarrow]"
