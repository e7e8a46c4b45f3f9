"""VoucherifyHook export calls against the running emulator: happy paths, faults, errors, security."""

from __future__ import annotations

import logging

import pytest

from tests.support.exports import read_parts, wait_done, window_filter
from voucherify_provider.catalog import UnknownFieldError
from voucherify_provider.emulator import EmulatorConfig, run_emulator
from voucherify_provider.errors import (
    VoucherifyApiError,
    VoucherifyAuthError,
    VoucherifyDownloadError,
    VoucherifyNotFoundError,
    VoucherifySecurityError,
    VoucherifyTransportError,
)
from voucherify_provider.hooks import _endpoints as ep
from voucherify_provider.hooks.voucherify import ExportStatus, VoucherifyHook

pytestmark = pytest.mark.unit

DAY1, DAY2 = "2024-01-02T00:00:00.000Z", "2024-01-03T00:00:00.000Z"


def test_test_connection_ok_and_wrong_credentials(hook, emu, monkeypatch):
    ok, message = hook.test_connection()
    assert ok and emu.base_url in message
    wrong = emu.connection_uri().replace(emu.config.app_token, "not-the-token")
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_WRONG", wrong)
    ok, message = VoucherifyHook("voucherify_wrong").test_connection()
    assert not ok
    assert message.startswith("Voucherify list_exports failed: 401 unauthorized")
    assert "cluster" in message and "not-the-token" not in message


@pytest.mark.parametrize("after_inclusive", [False, True])
@pytest.mark.parametrize("before_inclusive", [False, True])
def test_export_round_trip_matches_ground_truth(hook, emu, after_inclusive, before_inclusive):
    emu.configure(after_inclusive=after_inclusive, before_inclusive=before_inclusive)
    export = hook.create_export("redemption", fields=["id", "date", "result"], order="created_at",
                                filters=window_filter(DAY1, DAY2))
    assert export["status"] == "SCHEDULED" or export["status"] == "IN_PROGRESS"
    assert wait_done(hook, export["id"])["status"] == "DONE"
    rows = read_parts(hook.download_export(export["id"]))
    truth = emu.ground_truth("redemption", DAY1, DAY2, ids=True)
    ids = [r[0] for r in rows]
    # The API's bound handling decides only whether the two midnight records come along.
    expected = set(truth["ids"])
    on_start = [r for r in rows if r[1] == DAY1]
    on_end = [r for r in rows if r[1] == DAY2]
    assert bool(on_start) == after_inclusive and bool(on_end) == before_inclusive
    assert set(ids) - {r[0] for r in on_end} == expected - (set() if after_inclusive else {truth["ids"][0]})
    assert len(ids) == len(set(ids))


def test_unknown_field_is_rejected_before_any_call(hook, emu):
    with pytest.raises(UnknownFieldError, match="Did you mean 'voucher_code'"):
        hook.create_export("redemption", fields=["id", "vouchercode"])
    assert emu.requests()["counts"] == {}


def test_api_error_message_is_useful_on_its_own(hook, emu):
    bad = ep.ApiRequest("create_export", "POST", "/v1/exports",
                        json={"exported_object": "redemption", "parameters": {"fields": ["nope"]}})
    with pytest.raises(VoucherifyApiError) as err:
        hook._send(bad)
    text = str(err.value)
    assert err.value.status == 400 and err.value.key == "invalid_export_fields"
    assert text.startswith("Voucherify create_export failed: 400 invalid_export_fields: Invalid Export: "
                           "Unsupported field used.")
    assert "(request v-" in text and err.value.request_id.startswith("v-")


def test_unknown_export_is_not_found(hook):
    with pytest.raises(VoucherifyNotFoundError, match="Cannot find export with id exp_missing") as err:
        hook.get_export("exp_missing")
    assert err.value.resource_type == "export"


def test_get_retries_5xx_and_429_honouring_retry_after(hook, emu):
    export = hook.create_export("voucher")
    emu.inject({"route": "get_export", "status": 503, "count": 2},
               {"route": "get_export", "status": 429, "retry_after": 3})
    assert hook.get_export(export["id"])["id"] == export["id"]
    assert emu.requests()["counts"]["get_export"] == 4
    assert hook.sleeps[-1] == 3.0 and len(hook.sleeps) == 3


def test_create_export_is_not_resent_after_a_5xx(hook, emu):
    emu.inject({"route": "create_export", "status": 500})
    with pytest.raises(VoucherifyApiError, match="500"):
        hook.create_export("voucher")
    assert emu.requests()["counts"]["create_export"] == 1
    emu.inject({"route": "create_export", "status": 502})
    assert hook.create_export("voucher", retry_safe=True)["status"] in ("SCHEDULED", "IN_PROGRESS")
    assert emu.requests()["counts"]["create_export"] == 3


def test_create_export_is_resent_after_429(hook, emu):
    emu.inject({"route": "create_export", "status": 429, "retry_after": 1})
    assert hook.create_export("customer")["exported_object"] == "customer"
    assert emu.requests()["counts"]["create_export"] == 2 and hook.sleeps == [1.0]


def test_connect_errors_retry_then_fail_clearly(monkeypatch):
    from tests.support.sleeps import Sleeps
    from voucherify_provider.emulator.server import free_port
    from voucherify_provider.hooks._core import RetryPolicy

    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_DOWN",
                       f'{{"conn_type": "voucherify", "login": "a", "password": "secret-x", '
                       f'"host": "http://127.0.0.1:{free_port()}"}}')
    sleeps = Sleeps()
    down = VoucherifyHook("voucherify_down", retry_policy=RetryPolicy(max_attempts=3, backoff_base=0.01),
                          sleep=sleeps)
    with pytest.raises(VoucherifyTransportError, match="after 3 attempt"):
        down.create_export("voucher")  # never reached the server: safe to resend even a create
    assert len(sleeps) == 2


def test_rate_limit_headers_exposed_and_pacing(hook, emu):
    emu.configure(rate_limit_per_minute=6)
    for _ in range(5):
        hook.create_export("voucher", retry_safe=True)
    assert hook.rate_limit.limit == 6 and hook.rate_limit.remaining == 1
    assert hook.rate_limit.pause_before_next() > 0  # slows down instead of running into a 429


def test_status_enum_and_error_export(hook, emu):
    emu.inject({"route": "create_export", "export_error": True})
    export = hook.create_export("publication")
    assert wait_done(hook, export["id"])["status"] == "ERROR"
    assert hook.get_export_status(export["id"]) is ExportStatus.ERROR
    with pytest.raises(VoucherifyDownloadError, match="is ERROR, not DONE"):
        hook.download_export(export["id"])


def test_expired_download_token_is_refreshed_once(hook, emu):
    emu.configure(download_token_ttl_seconds=0.3)
    export = hook.create_export("customer")
    wait_done(hook, export["id"])
    parts = hook.download_export(export["id"])
    import time

    time.sleep(0.35)
    rows = read_parts(parts)
    assert len(rows) == emu.ground_truth("customer")["count"]
    counts = emu.requests()["counts"]
    assert counts["download_export"] == 2  # 401 with the stale token, then the fresh URL


def test_chunked_result_lands_every_part(hook, emu):
    emu.configure(chunk_rows=40)
    export = hook.create_export("redemption", fields=["id"])
    wait_done(hook, export["id"])
    parts = hook.download_export(export["id"])
    assert len(parts) == 5
    ids = [r[0] for r in read_parts(parts)]
    assert len(ids) == 200 == len(set(ids))
    with pytest.raises(VoucherifyDownloadError, match="split into 5 files"):
        hook.iter_export_bytes(export["id"])


def test_truncated_download_raises(hook, emu):
    export = hook.create_export("redemption", fields=["id", "metadata"])
    wait_done(hook, export["id"])
    emu.inject({"route": "download_export", "truncate": True})
    with pytest.raises(VoucherifyDownloadError, match=r"broke off|truncated"):
        read_parts(hook.download_export(export["id"]))
    assert len(read_parts(hook.download_export(export["id"]))) == 200  # a fresh attempt is whole


def test_foreign_download_host_never_sees_credentials(hook, emu):
    with run_emulator(EmulatorConfig(app_id="other", app_token="other-token-123")) as foreign:
        emu.configure(download_base_url=foreign.base_url)
        export = hook.create_export("voucher")
        wait_done(hook, export["id"])
        with pytest.raises(VoucherifySecurityError, match="Refusing to send credentials"):
            hook.download_export(export["id"])
        assert foreign.requests()["log"] == []


def test_download_token_never_logged(hook, emu, caplog):
    caplog.set_level(logging.DEBUG)
    export = hook.create_export("voucher")
    wait_done(hook, export["id"])
    read_parts(hook.download_export(export["id"]))
    tokens = emu.admin("GET", "secrets")["download_tokens"]
    assert tokens and "token=***" in caplog.text
    assert not any(t in caplog.text for t in tokens)
    assert emu.config.app_token not in caplog.text


def test_list_exports_paginates_to_the_end_and_delete(hook, emu):
    ids = {hook.create_export("voucher", retry_safe=True)["id"] for _ in range(5)}
    listed = [e["id"] for e in hook.list_exports(page_size=2)]
    assert set(listed) == ids and len(listed) == 5
    assert emu.requests()["counts"]["list_exports"] == 3
    victim = listed[0]
    hook.delete_export(victim)
    with pytest.raises(VoucherifyNotFoundError):
        hook.delete_export(victim)
    hook.delete_export(victim, missing_ok=True)
    assert len(list(hook.list_exports())) == 4


def test_orders_export_endpoint(hook, emu):
    export = hook.create_orders_export(fields=["id", "amount", "created_at"], order="-created_at")
    assert export["exported_object"] == "order"
    wait_done(hook, export["id"])
    rows = read_parts(hook.download_export(export["id"]))
    assert len(rows) == emu.ground_truth("order")["count"]
    assert rows[0][2] > rows[-1][2]  # newest first
    assert all(r[1].endswith(".00") or "." in r[1] for r in rows)


def test_plain_http_to_remote_host_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_REMOTE",
                       '{"conn_type": "voucherify", "login": "a", "password": "b-secret", '
                       '"host": "http://voucherify.example.com"}')
    with pytest.raises(VoucherifySecurityError, match="allow_insecure_http"):
        VoucherifyHook("voucherify_remote").get_export("exp_1")


def test_wrong_cluster_is_an_auth_error(hook, emu, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_WRONG2",
                       emu.connection_uri().replace(emu.config.app_id, "app-from-us1"))
    with pytest.raises(VoucherifyAuthError, match="cluster"):
        VoucherifyHook("voucherify_wrong2").get_export("exp_1")
