"""Redemptions: the generated ones (rollbacks included), per-voucher listings, rollbacks through the API."""

from __future__ import annotations

import itertools
from typing import Any

from voucherify_provider.emulator.api_errors import api_error, invalid_query_params, not_found
from voucherify_provider.emulator.dataset import iso_ms
from voucherify_provider.emulator.filters import FilterError, parse_time
from voucherify_provider.emulator.shared import Shared, now_ms

LIST_ORDERS = ("created_at", "-created_at", "id", "-id", "voucher_code", "-voucher_code", "tracking_id",
               "-tracking_id", "customer_id", "-customer_id")
RESULTS = ("SUCCESS", "FAILURE")


class RedemptionsModel:
    """Generated redemptions as the API answers them, plus the rollbacks made through the API."""

    def __init__(self, shared: Shared) -> None:
        self.shared, self.config, self.dataset = shared, shared.config, shared.dataset
        self.reset()

    def reset(self) -> None:
        """Forget the rollbacks made through the API."""
        with self.shared.lock:
            self.rollbacks: dict[str, dict[str, Any]] = {}  # redemption id -> rollback object

    def to_json(self, i: int) -> dict[str, Any]:
        """Redemption record ``i`` as ``GET /v1/redemptions/{id}`` returns it."""
        row = self.dataset.row("redemption", i)
        rollback = row["object"] == "redemption_rollback"
        cust_id = row["customer_id"]
        body: dict[str, Any] = {
            "id": row["id"], "object": row["object"], "date": iso_ms(row["date"]), "customer_id": cust_id,
            "tracking_id": row["tracking_id"], "metadata": row["metadata"],
            "redemption": row["_target"] if rollback else None, "result": row["result"],
            "status": "SUCCEEDED" if row["result"] == "SUCCESS" else "FAILED",
            "order": {"id": row["order_id"], "object": "order", "amount": row["order_amount"],
                      "source_id": None, "status": "PAID", "customer_id": cust_id},
            "channel": {"channel_id": self.config.app_id, "channel_type": "API"},
            "customer": {"id": cust_id, "name": row["customer_name"], "source_id": row["customer_source_id"],
                         "email": row["customer_source_id"], "metadata": {}, "object": "customer"},
            "related_object_type": "redemption" if rollback else "voucher",
            "related_object_id": row["_target"] if rollback else f"v_{row['voucher_code']}",
            "voucher": {"code": row["voucher_code"], "campaign": row["campaign"], "object": "voucher"},
        }
        if rollback:
            body["reason"] = "emulated rollback"
        elif row["_rolled_back"] or row["id"] in self.rollbacks:
            body["status"] = "ROLLED_BACK"
        if row["result"] == "FAILURE":
            body["failure_code"], body["failure_message"] = row["failure_code"], row["failure_message"]
        if row["gift_amount"] is not None:
            body["gift"] = {"amount": row["gift_amount"]}
        return body

    def get(self, redemption_id: str) -> dict[str, Any]:
        """``GET /v1/redemptions/{id}`` (also finds rollbacks made through the API)."""
        with self.shared.lock:
            for rollback in self.rollbacks.values():
                if rollback["id"] == redemption_id:
                    return rollback
            i = self.dataset.index_of("redemption", redemption_id)
            if i is None:
                raise not_found("redemption", redemption_id)
            return self.to_json(i)

    def list(self, limit: int, page: int, *, order: str | None, after: str | None, before: str | None,
             result: str | None, customer: str | None, campaign: str | None) -> dict[str, Any]:
        """``GET /v1/redemptions``: newest first by default; filters by time, result, customer, campaign."""
        try:
            after_ms = parse_time(after) if after else None
            before_ms = parse_time(before) if before else None
        except FilterError as err:
            raise invalid_query_params(str(err)) from None
        bounds = (self.config.after_inclusive, self.config.before_inclusive)
        indexes = self.dataset.index_range("redemption", after_ms, before_ms, *bounds)
        sort = order or "-created_at"
        ordered = reversed(indexes) if sort == "-created_at" else iter(indexes)
        needs_scan = bool(result or customer or campaign)
        if not needs_scan:
            total = len(indexes)
            chosen = list(itertools.islice(ordered, (page - 1) * limit, page * limit))
        else:
            def keep(i: int) -> bool:
                row = self.dataset.row("redemption", i)
                return ((not result or row["result"] == result)
                        and (not customer or customer in (row["customer_id"], row["customer_source_id"]))
                        and (not campaign or row["campaign"] == campaign))
            matching = [i for i in ordered if keep(i)]
            total, chosen = len(matching), matching[(page - 1) * limit : page * limit]
        with self.shared.lock:
            items = [self.to_json(i) for i in chosen]
        return {"object": "list", "data_ref": "redemptions", "redemptions": items, "total": total}

    def of_voucher(self, code: str) -> dict[str, Any]:
        """``GET /v1/vouchers/{code}/redemption``."""
        suffix = code.rsplit("-", 1)[-1]
        i = int(suffix) if suffix.isdigit() else -1
        if not (0 <= i < self.dataset.count("voucher")) or self.dataset.voucher_code(i) != code:
            raise not_found("voucher", code)
        entries = [self.to_json(r) for r in range(self.dataset.count("redemption"))
                   if self.dataset.row("redemption", r)["voucher_code"] == code]
        voucher = self.dataset.row("voucher", i)
        redeemed = sum(1 for e in entries if e["object"] == "redemption" and e["result"] == "SUCCESS")
        return {"quantity": voucher["redemption_quantity"], "redeemed_quantity": redeemed, "object": "list",
                "url": f"/v1/vouchers/{code}/redemptions?page=1&limit=10", "data_ref": "redemption_entries",
                "total": len(entries), "redemption_entries": entries}

    def rollback(self, redemption_id: str, reason: str | None, tracking_id: str | None) -> dict[str, Any]:
        """``POST /v1/redemptions/{id}/rollback``: only a successful, not yet rolled back redemption."""
        with self.shared.lock:
            original = self.get(redemption_id)
            if original["object"] != "redemption" or original["result"] != "SUCCESS":
                raise api_error(400, "invalid_redemption", "Invalid redemption",
                                f"Redemption {redemption_id} cannot be rolled back",
                                resource_id=redemption_id, resource_type="redemption")
            if original["status"] == "ROLLED_BACK":
                raise api_error(400, "already_rolled_back", "Already rolled back",
                                f"Redemption {redemption_id} has already been rolled back",
                                resource_id=redemption_id, resource_type="redemption")
            rollback = {**original, "id": self.shared.new_id("rr_"), "object": "redemption_rollback",
                        "date": iso_ms(now_ms()), "redemption": redemption_id, "reason": reason or "",
                        "status": "SUCCEEDED", "result": "SUCCESS", "related_object_type": "redemption",
                        "related_object_id": redemption_id}
            if tracking_id:
                rollback["tracking_id"] = tracking_id
            self.rollbacks[redemption_id] = rollback
            self.shared.data_changed()
            return rollback
