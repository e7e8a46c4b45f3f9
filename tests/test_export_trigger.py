"""VoucherifyExportTrigger against the emulator: one event per outcome, transient errors survived."""

from __future__ import annotations

import asyncio
import time

import pytest

from voucherify_provider.exports import next_interval
from voucherify_provider.triggers.export import VoucherifyExportTrigger

pytestmark = pytest.mark.unit


def run(trigger: VoucherifyExportTrigger) -> list[dict]:
    async def collect():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def make(export_id: str, wait: float = 20, interval: float = 0.05) -> VoucherifyExportTrigger:
    return VoucherifyExportTrigger(export_id, "voucherify_test", time.time() + wait, interval, 0.2)


def test_serialize_round_trip():
    trigger = make("exp_1")
    path, kwargs = trigger.serialize()
    assert path == "voucherify_provider.triggers.export.VoucherifyExportTrigger"
    assert VoucherifyExportTrigger(**kwargs).serialize() == (path, kwargs)


def test_poll_interval_doubles_to_the_cap():
    steps = [5.0]
    for _ in range(10):
        steps.append(next_interval(steps[-1], 120))
    assert steps[:5] == [5, 10, 20, 40, 80] and steps[-1] == 120


def test_first_poll_waits_and_polls_are_few(hook, emu):
    # Done at once: one poll, made only after the first interval (no wasted call at start).
    export = hook.create_export("voucher")
    started = time.monotonic()
    events = run(make(export["id"], interval=0.4))
    assert events[0]["status"] == "success" and events[0]["polls"] == 1
    assert time.monotonic() - started >= 0.4
    # Done after ~1 s with a 0.2 s first interval: polls at 0.2 and 1.4 s (waits grow by at least 1 s).
    emu.configure(in_progress_seconds=1.0)
    slow = hook.create_export("voucher")
    events = VoucherifyExportTrigger(slow["id"], "voucherify_test", time.time() + 20, 0.2, 10.0)
    assert [(e["status"], e["polls"]) for e in run(events)] == [("success", 2)]


def test_success_event(hook, emu):
    emu.configure(in_progress_seconds=0.3)
    export = hook.create_export("voucher")
    events = run(make(export["id"]))
    assert len(events) == 1 and events[0]["status"] == "success" and events[0]["export_id"] == export["id"]
    assert events[0]["polls"] >= 2


def test_error_not_found_and_timeout_events(hook, emu):
    emu.inject({"route": "create_export", "export_error": True})
    failed = hook.create_export("voucher")
    assert [e["status"] for e in run(make(failed["id"]))] == ["export_error"]
    assert [e["status"] for e in run(make("exp_missing"))] == ["not_found"]
    emu.configure(scheduled_seconds=60)
    slow = hook.create_export("voucher")
    events = run(make(slow["id"], wait=0.3))
    assert [e["status"] for e in events] == ["timeout"] and events[0]["export_status"] == "SCHEDULED"
    assert "still SCHEDULED" in events[0]["message"]


@pytest.mark.parametrize("status", [503, 429])
def test_transient_errors_are_survived(hook, emu, status):
    export = hook.create_export("voucher")
    emu.inject({"route": "get_export", "status": status, "retry_after": 0, "count": 8})
    events = run(make(export["id"]))
    assert [e["status"] for e in events] == ["success"]
    assert emu.requests()["counts"]["get_export"] >= 9
