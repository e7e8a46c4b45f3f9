"""VoucherifyHook order and redemption calls against the emulator."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from voucherify_provider.errors import VoucherifyApiError, VoucherifyConfigError, VoucherifyNotFoundError

pytestmark = pytest.mark.unit


def test_order_upsert_get_update(hook, emu):
    created = hook.create_order({"source_id": "shop-1", "amount": 12345, "status": "PAID",
                                 "metadata": {"channel": "web, mobile"}})
    assert created["object"] == "order" and created["total_amount"] == 12345
    assert hook.get_order(created["id"]) == hook.get_order("shop-1")
    again = hook.create_order({"source_id": "shop-1", "amount": 20000})  # upsert by source_id
    assert again["id"] == created["id"] and again["amount"] == 20000
    updated = hook.update_order(created["id"], {"status": "FULFILLED"})
    assert updated["status"] == "FULFILLED" and updated["updated_at"]
    with pytest.raises(VoucherifyNotFoundError, match="Cannot find order"):
        hook.get_order("ord_does_not_exist")
    with pytest.raises(VoucherifyApiError, match="400 invalid_payload"):
        hook.create_order({"source_id": "shop-2", "status": "LOST"})


def test_upsert_with_source_id_is_retried_but_plain_create_is_not(hook, emu):
    emu.inject({"route": "create_order", "status": 503})
    assert hook.create_order({"source_id": "shop-9", "amount": 1})["source_id"] == "shop-9"
    emu.inject({"route": "create_order", "status": 503})
    with pytest.raises(VoucherifyApiError, match="503"):
        hook.create_order({"amount": 1})
    assert emu.requests()["counts"]["create_order"] == 3


def test_list_orders_walks_every_page(hook, emu):
    hook.create_order({"source_id": "extra-1", "amount": 5})
    listed = list(hook.list_orders(page_size=30))
    total = emu.ground_truth("order")["count"] + 1
    assert len(listed) == total == len({o["id"] for o in listed})
    assert emu.requests()["counts"]["list_orders"] == -(-total // 30)
    created = [o["created_at"] for o in listed]
    assert created == sorted(created, reverse=True)


def test_import_orders_batches_of_2000(hook, emu):
    orders = [{"source_id": f"hist-{i}", "amount": 100 + i, "status": "PAID",
               "created_at": "2023-05-01T10:00:00.000Z"} for i in range(2500)]
    action_ids = hook.import_orders(orders)
    assert len(action_ids) == 2 and all(a.startswith("aa_") for a in action_ids)
    assert hook.get_order("hist-2499")["amount"] == 2599
    assert emu.requests()["counts"]["import_orders"] == 2


def test_get_redemption_and_rollback(hook, emu):
    first = next(hook.list_redemptions(result="SUCCESS"))
    got = hook.get_redemption(first["id"])
    assert got["id"] == first["id"] and got["object"] in ("redemption", "redemption_rollback")
    target = next(r for r in hook.list_redemptions(result="SUCCESS")
                  if r["object"] == "redemption" and r["status"] == "SUCCEEDED")
    rollback = hook.rollback_redemption(target["id"], reason="customer changed mind")
    assert rollback["object"] == "redemption_rollback" and rollback["redemption"] == target["id"]
    assert hook.get_redemption(target["id"])["status"] == "ROLLED_BACK"
    with pytest.raises(VoucherifyApiError, match="already_rolled_back"):
        hook.rollback_redemption(target["id"])
    with pytest.raises(VoucherifyNotFoundError):
        hook.get_redemption("r_nope")


def test_failed_redemptions_carry_documented_failure_codes(hook):
    from voucherify_provider.emulator.dataset import FAILURE_CODES

    failures = list(hook.list_redemptions(result="FAILURE"))
    assert failures and all(f["failure_code"] in FAILURE_CODES for f in failures)


def test_list_redemptions_window_and_page_cap(hook, emu):
    everything = list(hook.list_redemptions(page_size=1))  # 200 records > 99 pages of 1: window narrows
    ids = [r["id"] for r in everything]
    assert len(ids) == 200 == len(set(ids))
    dates = [r["date"] for r in everything]
    assert dates == sorted(dates, reverse=True)
    # The emulator answers 400 past page 99, so getting here means the hook narrowed the window instead.
    assert emu.requests()["counts"]["list_redemptions"] > 99
    after = datetime(2024, 1, 3, tzinfo=timezone.utc)
    before = datetime(2024, 1, 4, tzinfo=timezone.utc)
    window = list(hook.list_redemptions(created_after=after, created_before=before))
    truth = emu.ground_truth("redemption", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z")
    # The emulator excludes both bounds by default; the midnight record at the start is the difference.
    assert len(window) == truth["count"] - 1
    with pytest.raises(VoucherifyConfigError, match="naive"):
        next(hook.list_redemptions(created_after=datetime(2024, 1, 3)))


def test_voucher_redemptions(hook, emu):
    first = next(hook.list_redemptions())
    body = hook.get_voucher_redemptions(first["voucher"]["code"])
    assert body["object"] == "list" and body["data_ref"] == "redemption_entries"
    assert first["id"] in {e["id"] for e in body["redemption_entries"]}
    with pytest.raises(VoucherifyNotFoundError):
        hook.get_voucher_redemptions("NOPE-000000")
