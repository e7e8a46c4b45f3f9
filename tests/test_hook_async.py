"""VoucherifyAsyncHook against the emulator: same requests, errors and retry rules as the sync hook."""

from __future__ import annotations

import asyncio

import pytest

from voucherify_provider.errors import VoucherifyApiError, VoucherifyAuthError, VoucherifyNotFoundError
from voucherify_provider.hooks._core import RetryPolicy
from voucherify_provider.hooks.voucherify import ExportStatus
from voucherify_provider.hooks.voucherify_async import VoucherifyAsyncHook

pytestmark = pytest.mark.unit


def make_hook(sleeps):
    async def fake_sleep(seconds):
        sleeps.append(seconds)

    return VoucherifyAsyncHook("voucherify_test", retry_policy=RetryPolicy(backoff_base=0.01), sleep=fake_sleep)


def test_async_create_poll_and_delete(emu):
    async def scenario():
        hook = make_hook([])
        export = await hook.create_export("redemption", fields=["id"], order="-created_at")
        for _ in range(200):
            if await hook.get_export_status(export["id"]) is ExportStatus.DONE:
                break
            await asyncio.sleep(0.02)
        done = await hook.get_export(export["id"])
        await hook.delete_export(export["id"])
        with pytest.raises(VoucherifyNotFoundError):
            await hook.get_export(export["id"])
        return done, hook

    done, hook = asyncio.run(scenario())
    assert done["status"] == "DONE" and "token=" in done["result"]["url"]
    assert hook.rate_limit.limit is not None


def test_async_shares_retry_rules(emu):
    sleeps: list[float] = []
    emu.inject({"route": "get_export", "status": 502, "count": 2},
               {"route": "get_export", "status": 429, "retry_after": 2},
               {"route": "create_export", "status": 503})

    async def scenario():
        hook = make_hook(sleeps)
        with pytest.raises(VoucherifyApiError, match="503"):
            await hook.create_export("voucher")  # a create is not resent after a 5xx
        export = await hook.create_export("voucher")
        return await hook.get_export(export["id"])

    assert asyncio.run(scenario())["exported_object"] == "voucher"
    counts = emu.requests()["counts"]
    assert counts["create_export"] == 2 and counts["get_export"] == 4
    assert len(sleeps) == 3 and sleeps[-1] == 2.0


def test_async_auth_error(emu, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_BAD", emu.connection_uri().replace(emu.config.app_token, "nope1"))
    with pytest.raises(VoucherifyAuthError, match="cluster"):
        asyncio.run(VoucherifyAsyncHook("voucherify_bad").get_export("exp_x"))
