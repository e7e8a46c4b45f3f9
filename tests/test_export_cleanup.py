"""Exports leave Voucherify once they are landed or given up on; a retry can still reconnect to the export
it needs. Real emulator, operators run directly (the scheduler-level backfills assert the same in
test_chaos and test_cluster)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest

from tests.support.exports import wait_done
from tests.support.operators import JAN2, FakeStateStore, context, create, done_export, land
from voucherify_provider.errors import VoucherifyApiError, VoucherifyExportFailedError, VoucherifyNotFoundError
from voucherify_provider.triggers.export import VoucherifyExportTrigger

pytestmark = pytest.mark.unit
JAN1 = JAN2 - timedelta(days=1)


def _remaining(emu) -> list[str]:
    return [e["id"] for e in emu.export_ledger()["exports"] if not e["deleted"]]


def test_a_landing_deletes_its_export_once_committed(emu, hook, tmp_path):
    export_id = done_export(emu, hook)
    manifest = land(tmp_path, export_id, exported_object="redemption").execute(context())
    assert manifest["rows"] > 0 and _remaining(emu) == []
    ledger = emu.export_ledger()
    assert ledger["created"] == ledger["deleted"] == 1
    with pytest.raises(VoucherifyNotFoundError):  # nor is its file downloadable any more
        hook.get_export(export_id)


def test_delete_export_false_keeps_it(emu, hook, tmp_path):
    export_id = done_export(emu, hook)
    land(tmp_path, export_id, exported_object="redemption", delete_export=False).execute(context())
    assert _remaining(emu) == [export_id]


def test_a_failing_delete_leaves_the_landing_whole_and_says_so(emu, hook, tmp_path, capfd):
    export_id = done_export(emu, hook)
    emu.inject({"route": "delete_export", "status": 403})
    manifest = land(tmp_path, export_id, exported_object="redemption").execute(context())
    assert manifest["rows"] > 0 and _remaining(emu) == [export_id]
    assert f"Export {export_id} could not be deleted" in capfd.readouterr().out


def test_a_retry_after_the_delete_returns_what_the_earlier_try_landed(emu, hook, tmp_path):
    """The try that landed and deleted the export died before reporting success: its retry finds the
    export gone and the partition committed from it, and returns that, downloading nothing."""
    export_id = done_export(emu, hook)
    first = land(tmp_path, export_id, exported_object="redemption").execute(context())
    downloads = emu.requests()["counts"].get("download_export", 0)
    again = land(tmp_path, export_id, exported_object="redemption").execute(context())
    assert again == first and emu.requests()["counts"].get("download_export", 0) == downloads


def test_an_error_export_is_deleted_before_the_retry_exports_again(emu, hook):
    emu.inject({"route": "create_export", "export_error": True})
    op = create(wait_for_completion=True, deferrable=False, poll_interval=0.05)
    ctx = context()
    with pytest.raises(VoucherifyExportFailedError):
        op.execute(ctx)
    assert _remaining(emu) == []
    export_id = op.execute(ctx)  # the retry: a fresh export
    assert _remaining(emu) == [export_id]


def test_a_cleared_run_deletes_the_previous_runs_export(emu, hook):
    store = FakeStateStore()
    first = create().execute(context(task_state_store=store, dag_run=SimpleNamespace(clear_number=0)))
    second = create().execute(context(task_state_store=store, dag_run=SimpleNamespace(clear_number=1)))
    assert first != second and _remaining(emu) == [second]


def test_a_retry_reconnects_to_a_live_export(emu, hook):
    store = FakeStateStore()
    first = create().execute(context(task_state_store=store))
    wait_done(hook, first)
    assert create().execute(context(task_state_store=store)) == first and _remaining(emu) == [first]


def test_killed_while_waiting_in_the_worker_deletes_the_export(emu, hook):
    emu.configure(in_progress_seconds=30)
    op = create(wait_for_completion=True, deferrable=False, poll_interval=0.05, max_poll_interval=0.1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(context())
        except BaseException as err:  # the wait ends once the export is gone
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while op._export_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert op._export_id is not None
    op.on_kill()
    thread.join(10)
    assert _remaining(emu) == [] and len(errors) == 1 and isinstance(errors[0], VoucherifyNotFoundError)


def test_killed_while_deferred_the_trigger_deletes_the_export(emu, hook):
    export_id = create().execute(context())
    asyncio.run(VoucherifyExportTrigger(export_id, "voucherify_test", time.time() + 60).on_kill())
    assert _remaining(emu) == [export_id]  # a sensor's trigger: not its export to delete
    trigger = VoucherifyExportTrigger(export_id, "voucherify_test", time.time() + 60, delete_on_kill=True)
    assert trigger.serialize()[1]["delete_on_kill"] is True
    asyncio.run(trigger.on_kill())
    assert _remaining(emu) == []


def test_a_final_failure_deletes_the_export(emu, hook):
    def user_callback(context):
        calls.append(context)

    calls: list[object] = []
    op = create(on_failure_callback=user_callback)
    store = FakeStateStore()
    export_id = op.execute(context(task_state_store=store))
    assert op.on_failure_callback[0] is user_callback  # the user's callbacks stay, ours comes after
    assert not op.on_retry_callback  # Airflow 3.3 reconnects on retry: a retry keeps the export
    fresh = create()  # a deferred task resumes in a new process: the id comes from the task state store
    final = context(task_state_store=store, ti=SimpleNamespace(try_number=3, max_tries=2))
    for callback in fresh.on_failure_callback:
        callback(final)
    assert _remaining(emu) == [] and export_id


def test_killed_with_retries_left_keeps_the_export_for_the_reconnect(emu, hook):
    """Airflow 3.3 reconnects on retry; a SIGTERM is as often a worker shutting down as a user's kill."""
    op = create()
    export_id = op.execute(context(ti=SimpleNamespace(try_number=1, max_tries=3, stats_tags={})))
    op.on_kill()
    assert _remaining(emu) == [export_id]
    op._ti = SimpleNamespace(try_number=4, max_tries=3)  # the last try: nobody will reconnect
    op.on_kill()
    assert _remaining(emu) == []


def test_a_landing_failing_for_good_deletes_its_export(emu, hook, tmp_path):
    export_id = done_export(emu, hook)
    op = land(tmp_path, export_id, exported_object="redemption")
    for callback in op.on_failure_callback:
        callback(context())
    assert _remaining(emu) == []
    assert not land(tmp_path, export_id, delete_export=False).on_failure_callback


def test_a_retry_after_the_delete_under_other_policies_fails_naming_the_fix(emu, hook, tmp_path, monkeypatch):
    from voucherify_provider.outcomes import airflow_exception

    monkeypatch.setenv("AIRFLOW_VAR_KEY", "a-hash-key-long-enough-0123456789")
    export_id = done_export(emu, hook)
    land(tmp_path, export_id, exported_object="redemption").execute(context())
    with pytest.raises(airflow_exception("AirflowFailException"), match="under other column policies"):
        land(tmp_path, export_id, exported_object="redemption", column_policies="personal_data",
             hash_key_variable="key").execute(context())


def _died_before_its_id_was_stored(store: FakeStateStore, **extra: object) -> str:
    """A try that created its export and died before Airflow stored the id (the resumable mixin's known gap
    between ``submit_job`` and ``task_state_store.set``): what it leaves is the request it recorded first."""
    return create().submit_job(context(task_state_store=store, **extra))["export_id"]


def test_a_retry_finds_the_export_its_crashed_try_made_but_never_recorded(emu, hook):
    store = FakeStateStore()
    orphan = _died_before_its_id_was_stored(store)
    assert "export_id" not in store["voucherify_export_id"]
    assert create().execute(context(task_state_store=store)) == orphan
    assert emu.requests()["counts"]["create_export"] == 1 and _remaining(emu) == [orphan]
    assert store["voucherify_export_id"] == {"export_id": orphan, "clear_number": 0}


def test_a_recorded_request_that_never_took_effect_exports_afresh(emu, hook):
    store = FakeStateStore()
    emu.inject({"route": "create_export", "status": 500})  # refused before any export was made
    with pytest.raises(VoucherifyApiError, match="500"):
        create().execute(context(task_state_store=store))
    assert _remaining(emu) == []
    fresh = create().execute(context(task_state_store=store))
    assert _remaining(emu) == [fresh] and emu.requests()["counts"].get("list_exports") == 1


def test_a_cleared_run_exports_afresh_and_names_the_export_its_crashed_try_never_recorded(emu, hook, capfd):
    """Not deleted: had that try's request never taken effect, the match would be another run's export."""
    store = FakeStateStore()
    orphan = _died_before_its_id_was_stored(store, dag_run=SimpleNamespace(clear_number=0))
    fresh = create().execute(context(task_state_store=store, dag_run=SimpleNamespace(clear_number=1)))
    assert fresh != orphan and sorted(_remaining(emu)) == sorted([orphan, fresh])
    out = capfd.readouterr().out.splitlines()
    assert any(orphan in line and "delete it if no run landed it" in line for line in out)


def test_an_export_created_long_after_the_recorded_request_is_not_taken(emu, hook, monkeypatch):
    """Created minutes after the request time the try recorded: another run's, not that try's."""
    from voucherify_provider.operators import export as export_module

    store = FakeStateStore()
    monkeypatch.setattr(export_module, "CREATE_CALL_WINDOW", timedelta(seconds=-60))  # the window closes early
    other = _died_before_its_id_was_stored(store)
    fresh = create().execute(context(task_state_store=store))
    assert fresh != other and sorted(_remaining(emu)) == sorted([other, fresh])


def test_an_unrecorded_export_that_cannot_be_told_apart_is_left_and_named(emu, hook, capfd):
    """Another run asked for the same window meanwhile: either export could be the crashed try's, and the
    other run will land (and delete) its own; taking or deleting one could break that run."""
    store = FakeStateStore()
    orphan = _died_before_its_id_was_stored(store)
    other = create().execute(context())  # another run, same request
    fresh = create().execute(context(task_state_store=store))
    assert fresh not in (orphan, other) and sorted(_remaining(emu)) == sorted([orphan, other, fresh])
    warned = [line for line in capfd.readouterr().out.splitlines() if "none is taken or deleted" in line]
    assert len(warned) == 1 and orphan in warned[0] and other in warned[0]


def test_an_export_of_another_request_is_never_taken_for_the_crashed_trys(emu, hook):
    store = FakeStateStore()
    hook.delete_export(_died_before_its_id_was_stored(store))  # gone meanwhile (deleted in the dashboard)
    other_window = create().execute(context(data_interval_start=JAN1, data_interval_end=JAN2))
    fresh = create().execute(context(task_state_store=store))
    assert fresh != other_window and sorted(_remaining(emu)) == sorted([other_window, fresh])
