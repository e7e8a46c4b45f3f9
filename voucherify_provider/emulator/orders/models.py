"""Orders: the generated ones (at the data clock) and those created, updated or imported through the API."""

from __future__ import annotations

from typing import Any

from voucherify_provider.emulator.api_errors import invalid_payload, not_found
from voucherify_provider.emulator.dataset import iso_ms
from voucherify_provider.emulator.filters import FilterError, parse_time
from voucherify_provider.emulator.shared import Shared, now_ms

ORDER_STATUSES = ("CREATED", "PAID", "CANCELED", "FULFILLED")
LIST_ORDERS = ("created_at", "-created_at", "updated_at", "-updated_at", "status", "-status")
MAX_IMPORT = 2000


def _order_json(row: dict[str, Any]) -> dict[str, Any]:
    body = {
        "id": row["id"], "source_id": row.get("source_id"), "status": row.get("status", "CREATED"),
        "amount": row.get("amount"), "discount_amount": row.get("discount_amount") or 0,
        "items_discount_amount": row.get("items_discount_amount") or 0,
        "total_discount_amount": row.get("total_discount_amount") or 0,
        "total_amount": row.get("total_amount", row.get("amount")),
        "metadata": row.get("metadata") or {}, "object": "order",
        "created_at": iso_ms(row["created_at"]), "updated_at": iso_ms(row["updated_at"]) if row.get(
            "updated_at") else None,
        "customer_id": row.get("customer_id"), "referrer_id": row.get("referrer_id"), "items": [],
    }
    if body["amount"] is None:
        del body["amount"]
    if row.get("customer_id"):
        body["customer"] = {"id": row["customer_id"], "object": "customer"}
    if row.get("referrer_id"):
        body["referrer"] = {"id": row["referrer_id"], "object": "customer"}
    return body


def _validate(body: Any) -> None:
    if not isinstance(body, dict):
        raise invalid_payload("Request body should be an object")
    if "status" in body and body["status"] not in ORDER_STATUSES:
        raise invalid_payload(f"Property .status should be one of [ {', '.join(ORDER_STATUSES)} ]")
    for key in ("amount", "discount_amount"):
        if key in body and not isinstance(body[key], int):
            raise invalid_payload(f"Property .{key} should be integer")
    if "created_at" in body:
        try:
            parse_time(body["created_at"])
        except FilterError:
            raise invalid_payload("Property .created_at should be a date-time") from None


class OrdersModel:
    """Orders as the API shows them: an API-made or API-changed order hides its generated version."""

    def __init__(self, shared: Shared) -> None:
        self.shared, self.dataset = shared, shared.dataset
        self.reset()

    def reset(self) -> None:
        """Forget the orders made or changed through the API."""
        with self.shared.lock:
            self.made: dict[str, dict[str, Any]] = {}

    def _generated(self, i: int) -> dict[str, Any]:
        return _order_json(self.dataset.row("order", i, self.shared.as_of()))

    def _find(self, key: str) -> dict[str, Any] | None:
        if key in self.made:
            return self.made[key]
        for order in self.made.values():
            if order.get("source_id") == key:
                return order
        i = self.dataset.index_of("order", key)
        if i is None and key.startswith("order-") and key[6:].isdigit() and int(key[6:]) < self.dataset.count("order"):
            i = int(key[6:])
        if i is None or not self.dataset.exists("order", i, self.shared.as_of()):
            return None  # not ours, deleted, or not created yet at the data clock
        return self._generated(i)

    def get(self, key: str) -> dict[str, Any]:
        """``GET /v1/orders/{id}`` by id or source id."""
        with self.shared.lock:
            order = self._find(key)
            if order is None:
                raise not_found("order", key)
            return order

    def upsert(self, body: Any) -> dict[str, Any]:
        """``POST /v1/orders``: create, or update the order named by ``id``/``source_id``."""
        _validate(body)
        with self.shared.lock:
            existing = None
            for key in (body.get("id"), body.get("source_id")):
                if key and existing is None:
                    existing = self._find(key)
            if existing is None and body.get("id"):
                raise not_found("order", body["id"])
            return self._store(existing, body)

    def update(self, key: str, body: Any) -> dict[str, Any]:
        """``PUT /v1/orders/{id}``."""
        _validate(body)
        with self.shared.lock:
            existing = self._find(key)
            if existing is None:
                raise not_found("order", key)
            return self._store(existing, body)

    def _store(self, existing: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any]:
        now = now_ms()
        if existing is None:
            created = parse_time(body["created_at"]) if body.get("created_at") else now
            row: dict[str, Any] = {"id": self.shared.new_id("ord_"), "created_at": created, "updated_at": None,
                                   "status": "CREATED"}
        else:
            row = {**existing, "created_at": parse_time(existing["created_at"]), "updated_at": now}
        for key in ("source_id", "status", "amount", "discount_amount", "metadata"):
            if key in body:
                row[key] = body[key]
        customer = body.get("customer") or {}
        if body.get("customer_id") or customer.get("id"):
            row["customer_id"] = body.get("customer_id") or customer.get("id")
        if "amount" in row and row["amount"] is not None:
            row["total_amount"] = row["amount"] - (row.get("discount_amount") or 0)
        order = _order_json(row)
        self.made[order["id"]] = order
        self.shared.data_changed()
        return order

    def import_many(self, body: Any) -> dict[str, Any]:
        """``POST /v1/orders/import``: at most 2000 orders, processed at once, async action id returned."""
        if not isinstance(body, list) or not body:
            raise invalid_payload("Request body should be a non-empty array of orders")
        if len(body) > MAX_IMPORT:
            raise invalid_payload(f"You can import at most {MAX_IMPORT} orders at once")
        for order in body:
            _validate(order)
        with self.shared.lock:
            for order in body:
                existing = self._find(order["source_id"]) if order.get("source_id") else None
                self._store(existing, order)
            return {"async_action_id": self.shared.new_id("aa_")}

    def list(self, limit: int, page: int, order: str | None) -> dict[str, Any]:
        """``GET /v1/orders`` over generated and API-made orders."""
        with self.shared.lock:
            as_of = self.shared.as_of()
            live = [i for i in range(self.dataset.count("order")) if self.dataset.exists("order", i, as_of)]
            generated = len(live)
            made = [o for o in self.made.values() if self.dataset.index_of("order", o["id"]) is None]
            total = generated + len(made)
            sort = order or "-created_at"
            start, stop = (page - 1) * limit, min(page * limit, total)
            if sort.lstrip("-") == "created_at":
                made.sort(key=lambda o: o["created_at"])
                positions = range(start, stop)
                if sort.startswith("-"):
                    positions = range(total - 1 - start, total - 1 - stop, -1) if start < total else range(0)

                def at(p: int) -> dict[str, Any]:
                    if p < generated:
                        i_id = self.dataset.record_id("order", live[p])
                        return self.made.get(i_id) or self._generated(live[p])
                    return made[p - generated]

                items = [at(p) for p in positions]
            else:
                everything = [self.made.get(self.dataset.record_id("order", i)) or self._generated(i)
                              for i in live] + made
                key = sort.lstrip("-")
                everything.sort(key=lambda o: str(o.get(key) or ""), reverse=sort.startswith("-"))
                items = everything[start:stop]
            return {"object": "list", "data_ref": "orders", "orders": items, "total": total}
