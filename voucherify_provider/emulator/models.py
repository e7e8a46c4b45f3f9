"""The emulator's state and behaviour, independent of HTTP: exports, orders, redemptions, ground truth."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voucherify_provider import catalog
from voucherify_provider.emulator.config import EmulatorConfig
from voucherify_provider.emulator.dataset import (
    HISTORY_OBJECTS,
    HISTORY_SPAN_MS,
    MASK,
    Dataset,
    _mix,
    _tag,
    field_value,
    iso_ms,
    render_row,
    to_ms,
)
from voucherify_provider.emulator.filters import FilterError, compile_filters, parse_time

EXPORT_LIST_ORDERS = ("created_at", "-created_at", "status", "-status")
ORDER_STATUSES = ("CREATED", "PAID", "CANCELED", "FULFILLED")
CSV_BUFFER = 256 * 1024


def _read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


class ApiFailure(Exception):
    """An error the API answers with: status plus Voucherify's error body fields."""

    def __init__(self, status: int, key: str, message: str, details: str | None = None,
                 resource_id: str | None = None, resource_type: str | None = None) -> None:
        super().__init__(f"{status} {key}: {details or message}")
        self.status, self.key, self.message, self.details = status, key, message, details
        self.resource_id, self.resource_type = resource_id, resource_type


def not_found(kind: str, resource_id: str) -> ApiFailure:
    """The documented 404 body."""
    return ApiFailure(404, "not_found", "Resource not found", f"Cannot find {kind} with id {resource_id}",
                      resource_id=resource_id, resource_type=kind)


def invalid_payload(details: str) -> ApiFailure:
    """The documented 400 invalid_payload body."""
    return ApiFailure(400, "invalid_payload", "Invalid payload", details)


def now_ms() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


@dataclass
class ExportRecord:
    """One export and what it takes to serve its file."""

    id: str
    exported_object: str
    parameters: dict[str, Any]
    created_monotonic: float
    created_at_ms: int
    fails: bool = False
    tokens: list[tuple[str, float]] = field(default_factory=list)
    row_count: int | None = None
    # Where in [in_progress_seconds, in_progress_seconds_max] this export's duration falls (0..1).
    duration_draw: float = 0.0

    def status(self, config: EmulatorConfig, now: float) -> str:
        """Status as time passes: SCHEDULED -> IN_PROGRESS -> DONE (or ERROR)."""
        age = now - self.created_monotonic
        if age < config.scheduled_seconds:
            return "SCHEDULED"
        spread = max(0.0, config.in_progress_seconds_max - config.in_progress_seconds)
        if age < config.scheduled_seconds + config.in_progress_seconds + spread * self.duration_draw:
            return "IN_PROGRESS"
        return "ERROR" if self.fails else "DONE"


class Backend:
    """All emulator state behind a lock; the HTTP layer only translates."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.dataset = Dataset(config.seed, config.scale, to_ms(config.start), to_ms(config.end))
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget exports, API-made orders and rollbacks, and the request log; keep the dataset."""
        with self.lock:
            self.exports: dict[str, ExportRecord] = {}
            self.orders: dict[str, dict[str, Any]] = {}
            self.rollbacks: dict[str, dict[str, Any]] = {}  # redemption id -> rollback object
            self.request_counts: dict[str, int] = {}
            self.request_log: list[dict[str, Any]] = []
            self.issued_tokens: list[str] = []
            self.revision = 0  # bumped by every change to the data (API orders, rollbacks): keys cached files
            self._counter = itertools.count(1)
            # Ids restart after a reset, so files rendered for the old exports must go.
            for path in getattr(self, "_rendered", []):
                path.unlink(missing_ok=True)
            self._rendered: list[Path] = []
            self._file_keys: dict[tuple[str, int], str] = {}
            self._render_lock = threading.Lock()

    def log_request(self, route: str, method: str, path: str, status: int) -> None:
        """Record a served request (admin routes excluded) for tests to inspect."""
        with self.lock:
            self.request_counts[route] = self.request_counts.get(route, 0) + 1
            if len(self.request_log) < 50_000:
                self.request_log.append({"route": route, "method": method, "path": path, "status": status,
                                         "at": time.time()})

    def _new_id(self, prefix: str) -> str:
        n = next(self._counter)
        return f"{prefix}{_tag(_mix(self.config.seed, n, 7), 16)}{n:08x}"

    # -- exports ------------------------------------------------------------------------------------

    def create_export(self, body: Any, *, orders_endpoint: bool, fails: bool) -> dict[str, Any]:
        """Validate and schedule an export; return its SCHEDULED representation."""
        if not isinstance(body, dict):
            raise invalid_payload("Request body should be an object")
        name: Any
        if orders_endpoint:
            name = "order"
            unknown = set(body) - {"parameters"}
        else:
            name = body.get("exported_object")
            unknown = set(body) - {"exported_object", "parameters"}
            if name not in catalog.OBJECTS:
                raise invalid_payload(
                    "Property .exported_object should be equal to one of the allowed values "
                    f"[ {', '.join(catalog.OBJECTS)} ]")
        if unknown:
            raise invalid_payload(f"Unsupported properties: {', '.join(sorted(unknown))}")
        obj = catalog.OBJECTS[name]
        params = body.get("parameters") or {}
        if not isinstance(params, dict) or set(params) - {"order", "fields", "filters"}:
            raise invalid_payload("Property .parameters may only hold order, fields and filters")
        fields_ = params.get("fields")
        if fields_ is not None:
            if not isinstance(fields_, list) or not fields_ or not all(isinstance(f, str) for f in fields_):
                raise invalid_payload("Property .parameters.fields should be a non-empty array of strings")
            if not all(obj.is_allowed_field(f) for f in fields_):
                raise ApiFailure(400, "invalid_export_fields", "Invalid Export",
                                 f"Unsupported field used. Allowed fields: {', '.join(obj.fields)}")
        order = params.get("order")
        if order is not None and order not in obj.allowed_orders:
            raise invalid_payload(f"Property .parameters.order should be one of [ {', '.join(obj.allowed_orders)} ]")
        try:
            compile_filters(params.get("filters"), set(obj.fields), obj.created_field, (False, False))
        except FilterError as err:
            raise invalid_payload(str(err)) from None
        with self.lock:
            export_id = self._new_id("exp_")
            record = ExportRecord(
                id=export_id, exported_object=name,
                parameters={k: params[k] for k in ("order", "fields", "filters") if k in params},
                created_monotonic=time.monotonic(), created_at_ms=now_ms(), fails=fails,
                duration_draw=_mix(self.config.seed, int(export_id[-8:], 16), 11) / MASK,
            )
            self.exports[record.id] = record
            # The create answer is an ExportScheduledBase: always SCHEDULED, and ``user_id`` a required
            # non-null string (GET answers null for API-channel exports, as every official example shows).
            return {**self.export_json(record, base_url=""), "status": "SCHEDULED", "result": None, "user_id": ""}

    def _export(self, export_id: str) -> ExportRecord:
        record = self.exports.get(export_id)
        if record is None:
            raise not_found("export", export_id)
        return record

    def export_json(self, record: ExportRecord, base_url: str) -> dict[str, Any]:
        """The export object as the API returns it (``result`` holds the file URLs once DONE)."""
        status = record.status(self.config, time.monotonic())
        # Echo what was asked: documented defaults (``code`` for publications) are outside the spec's enums.
        params = dict(record.parameters)
        result: dict[str, Any] | None = None
        if status == "DONE":
            token = self._current_token(record)
            download_base = (self.config.download_base_url or base_url).rstrip("/")
            url = f"{download_base}/v1/exports/{record.id}?token={token}"
            parts = self.part_count(record)
            result = {"url": url}
            if parts > 1:
                result["urls"] = [f"{url}&part={p}" for p in range(parts)]
        return {
            "id": record.id, "object": "export", "created_at": iso_ms(record.created_at_ms), "status": status,
            "channel": "API", "exported_object": record.exported_object, "parameters": params,
            "result": result, "user_id": None,
        }

    def _current_token(self, record: ExportRecord) -> str:
        ttl, now = self.config.download_token_ttl_seconds, time.monotonic()
        if not record.tokens or (ttl > 0 and now - record.tokens[-1][1] >= ttl):
            token = secrets.token_urlsafe(24)
            record.tokens.append((token, now))
            self.issued_tokens.append(token)
        return record.tokens[-1][0]

    def get_export(self, export_id: str, base_url: str) -> dict[str, Any]:
        """``GET /v1/exports/{id}``."""
        with self.lock:
            return self.export_json(self._export(export_id), base_url)

    def delete_export(self, export_id: str) -> None:
        """``DELETE /v1/exports/{id}``."""
        with self.lock:
            self._export(export_id)
            del self.exports[export_id]

    def list_exports(self, limit: int, page: int, order: str | None, base_url: str) -> dict[str, Any]:
        """``GET /v1/exports``."""
        with self.lock:
            records = list(self.exports.values())
            key = (order or "-created_at").lstrip("-")
            now = time.monotonic()
            records.sort(key=lambda r: (r.status(self.config, now) if key == "status" else r.created_at_ms, r.id),
                         reverse=(order or "-created_at").startswith("-"))
            window = records[(page - 1) * limit : page * limit]
            return {"object": "list", "data_ref": "exports", "total": len(records),
                    "exports": [self.export_json(r, base_url) for r in window]}

    def authorize_download(self, export_id: str, token: str | None) -> ExportRecord:
        """Check the download token: unknown or expired tokens are 401, as on the real download host."""
        with self.lock:
            record = self.exports.get(export_id)
            ttl, now = self.config.download_token_ttl_seconds, time.monotonic()
            valid = record is not None and any(
                t == token and (ttl <= 0 or now - issued < ttl) for t, issued in record.tokens)
            if not valid or record is None or record.status(self.config, now) != "DONE":
                raise ApiFailure(401, "unauthorized", "Unauthorized")
            return record

    def as_of(self) -> int | None:
        """The data clock (ms) when set: the data as it was then; None: all of the history."""
        return parse_time(self.config.data_clock) if self.config.data_clock else None

    def _matching_indexes(self, record: ExportRecord) -> Iterator[int]:
        obj = catalog.OBJECTS[record.exported_object]
        bounds = (self.config.after_inclusive, self.config.before_inclusive)
        filters = record.parameters.get("filters")
        per_condition = self.config.or_junction == "condition"
        predicate, (after, before) = compile_filters(filters, set(obj.fields), obj.created_field, bounds,
                                                     or_per_condition=per_condition)
        if after is None and before is None and not per_condition:
            after, before = _change_window_candidates(filters)
        indexes: range = self.dataset.index_range(obj.name, after, before, *bounds)
        as_of = self.as_of()
        order = record.parameters.get("order") or ""
        sort_key = order.lstrip("-")
        ordered: Iterator[int] | list[int]
        if sort_key in ("", "created_at", "expires_at"):
            ordered = reversed(indexes) if order.startswith("-") else iter(indexes)
        else:  # other sort keys need the values; fine at the sizes such exports are used with
            source = "voucher_code" if sort_key == "voucher_code" else sort_key
            ordered = sorted(indexes, key=lambda i: str(field_value(self.dataset.row(obj.name, i, as_of), source)
                                                        or ""), reverse=order.startswith("-"))
        for i in ordered:
            if not self.dataset.exists(obj.name, i, as_of):
                continue
            if predicate is None or predicate(self.dataset.row(obj.name, i, as_of)):
                yield i

    def part_count(self, record: ExportRecord) -> int:
        """Number of files the result is split into (``chunk_rows`` setting)."""
        if self.config.chunk_rows <= 0:
            return 1
        if record.row_count is None:
            record.row_count = sum(1 for _ in self._matching_indexes(record))
        return max(1, -(-record.row_count // self.config.chunk_rows))

    def export_file(self, record: ExportRecord, part: int) -> Iterator[bytes]:
        """What the download host serves: rendered on the fly, or once into ``export_cache_dir`` then read.

        A generator, so the rendering happens while the response streams (in the server's thread pool).
        """
        if not self.config.export_cache_dir:
            yield from self.csv_stream(record, part)
            return
        with self._render_lock:  # one rendering per file, even when downloads race
            # An export's file is fixed at its first download, whatever changes in the data afterwards.
            key = self._file_keys.setdefault((record.id, part), self._content_key(record, part))
            path = Path(self.config.export_cache_dir) / f"{key}.csv"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                with tmp.open("wb") as out:
                    for chunk in self.csv_stream(record, part):
                        out.write(chunk)
                tmp.rename(path)
                self._rendered.append(path)
        yield from _read_file(path)

    def _content_key(self, record: ExportRecord, part: int) -> str:
        """Names a rendered file by what it holds, so a new export of the same data (a benchmark's repeated
        runs, a retried window) is served from the file already rendered, like the real API's storage."""
        c = self.config
        identity = [record.exported_object, record.parameters, part, self.revision, c.seed, c.scale, c.start, c.end,
                    c.money_format, c.csv_headers, c.chunk_rows, c.after_inclusive, c.before_inclusive,
                    c.data_clock, c.or_junction]
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def csv_stream(self, record: ExportRecord, part: int) -> Iterator[bytes]:
        """The CSV file (or one part of it) in buffers of about 256 KiB."""
        obj = catalog.OBJECTS[record.exported_object]
        fields_ = record.parameters.get("fields") or list(obj.default_fields)
        kinds = [obj.field_type(f).value for f in fields_]
        indexes: Iterator[int] = self._matching_indexes(record)
        if self.config.chunk_rows > 0:
            size = self.config.chunk_rows
            indexes = itertools.islice(indexes, part * size, (part + 1) * size)
        money, buffer = self.config.money_format, io.StringIO()
        writer = csv.writer(buffer)
        headers = fields_ if self.config.csv_headers == "keys" else [obj.label(f) for f in fields_]
        writer.writerow(headers)
        as_of = self.as_of()
        for i in indexes:
            row = self.dataset.row(obj.name, i, as_of)
            writer.writerow(render_row(row, fields_, kinds, money))
            if buffer.tell() >= CSV_BUFFER:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode("utf-8")

    # -- ground truth for tests ---------------------------------------------------------------------

    def ground_truth(self, name: str, start: str | None, end: str | None, with_ids: bool,
                     placed_by: str = "created") -> dict[str, Any]:
        """Records of an object in [start, end) at the data clock: what a correct extractor must land.

        ``placed_by="created"`` places a record by its creation (created_at windows, snapshots);
        ``"last_change"`` by its last change, updated_at else created_at (change windows). Deleted records
        are in neither.
        """
        obj = catalog.get_object(name)
        start_ms = parse_time(start) if start else None
        end_ms = parse_time(end) if end else None
        as_of = self.as_of()
        if placed_by == "last_change":
            lo = None if start_ms is None else start_ms - HISTORY_SPAN_MS
            candidates = self.dataset.index_range(obj.name, lo, end_ms, True, False)
            indexes: range | list[int] = [
                i for i in candidates if self.dataset.exists(obj.name, i, as_of)
                and (start_ms or 0) <= self.dataset.last_change_ms(obj.name, i, as_of) < (end_ms or 1 << 62)]
        elif placed_by == "created":
            indexes = self.dataset.index_range(obj.name, start_ms, end_ms, True, False)
            if obj.name in HISTORY_OBJECTS or as_of is not None:  # deleted, or not created yet
                indexes = [i for i in indexes if self.dataset.exists(obj.name, i, as_of)]
        else:
            raise ValueError(f"placed_by must be 'created' or 'last_change', got {placed_by!r}")
        body: dict[str, Any] = {"object": obj.name, "start": start, "end": end, "count": len(indexes)}
        if with_ids:
            id_field = "code" if obj.name == "publication" else "id"
            body["id_field"] = id_field
            body["ids"] = [str(self.dataset.row(obj.name, i)[id_field]) for i in indexes]
        return body

    def state(self, name: str, fields_: list[str], at: str | None = None) -> dict[str, Any]:
        """Every record of an object at ``at`` (ISO instant; default the data clock), deleted ones left out,
        ``fields_`` rendered as in the CSV: the current state a current-state table must equal."""
        obj = catalog.get_object(name)
        as_of = parse_time(at) if at else self.as_of()
        kinds = [obj.field_type(f).value for f in fields_]
        rows = []
        for i in range(self.dataset.count(obj.name)):
            if self.dataset.exists(obj.name, i, as_of):
                row = self.dataset.row(obj.name, i, as_of)
                rows.append(render_row(row, fields_, kinds, "fixed2"))
        return {"object": obj.name, "as_of": at or self.config.data_clock or None, "fields": fields_, "rows": rows}

    # -- orders -------------------------------------------------------------------------------------

    def _generated_order(self, i: int) -> dict[str, Any]:
        row = self.dataset.row("order", i, self.as_of())
        return self._order_json(row)

    def _order_json(self, row: dict[str, Any]) -> dict[str, Any]:
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

    def _find_order(self, key: str) -> dict[str, Any] | None:
        if key in self.orders:
            return self.orders[key]
        for order in self.orders.values():
            if order.get("source_id") == key:
                return order
        i = self.dataset.index_of("order", key)
        if i is None and key.startswith("order-") and key[6:].isdigit() and int(key[6:]) < self.dataset.count("order"):
            i = int(key[6:])
        if i is None or not self.dataset.exists("order", i, self.as_of()):
            return None  # not ours, deleted, or not created yet at the data clock
        return self._generated_order(i)

    def get_order(self, key: str) -> dict[str, Any]:
        """``GET /v1/orders/{id}`` by id or source id."""
        with self.lock:
            order = self._find_order(key)
            if order is None:
                raise not_found("order", key)
            return order

    def upsert_order(self, body: Any) -> dict[str, Any]:
        """``POST /v1/orders``: create, or update the order named by ``id``/``source_id``."""
        self._validate_order(body)
        with self.lock:
            existing = None
            for key in (body.get("id"), body.get("source_id")):
                if key and existing is None:
                    existing = self._find_order(key)
            if existing is None and body.get("id"):
                raise not_found("order", body["id"])
            return self._store_order(existing, body)

    def update_order(self, key: str, body: Any) -> dict[str, Any]:
        """``PUT /v1/orders/{id}``."""
        self._validate_order(body)
        with self.lock:
            existing = self._find_order(key)
            if existing is None:
                raise not_found("order", key)
            return self._store_order(existing, body)

    def _store_order(self, existing: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any]:
        now = now_ms()
        if existing is None:
            created = parse_time(body["created_at"]) if body.get("created_at") else now
            row: dict[str, Any] = {"id": self._new_id("ord_"), "created_at": created, "updated_at": None,
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
        order = self._order_json(row)
        self.orders[order["id"]] = order
        self.revision += 1
        return order

    @staticmethod
    def _validate_order(body: Any) -> None:
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

    def import_orders(self, body: Any) -> dict[str, Any]:
        """``POST /v1/orders/import``: at most 2000 orders, processed at once, async action id returned."""
        if not isinstance(body, list) or not body:
            raise invalid_payload("Request body should be a non-empty array of orders")
        if len(body) > 2000:
            raise invalid_payload("You can import at most 2000 orders at once")
        for order in body:
            self._validate_order(order)
        with self.lock:
            for order in body:
                existing = self._find_order(order["source_id"]) if order.get("source_id") else None
                self._store_order(existing, order)
            return {"async_action_id": self._new_id("aa_")}

    def list_orders(self, limit: int, page: int, order: str | None) -> dict[str, Any]:
        """``GET /v1/orders`` over generated and API-made orders."""
        with self.lock:
            as_of = self.as_of()
            live = [i for i in range(self.dataset.count("order")) if self.dataset.exists("order", i, as_of)]
            generated = len(live)
            made = [o for o in self.orders.values() if self.dataset.index_of("order", o["id"]) is None]
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
                        return self.orders.get(i_id) or self._generated_order(live[p])
                    return made[p - generated]

                items = [at(p) for p in positions]
            else:
                everything = [self.orders.get(self.dataset.record_id("order", i)) or self._generated_order(i)
                              for i in live] + made
                key = sort.lstrip("-")
                everything.sort(key=lambda o: str(o.get(key) or ""), reverse=sort.startswith("-"))
                items = everything[start:stop]
            return {"object": "list", "data_ref": "orders", "orders": items, "total": total}

    # -- redemptions --------------------------------------------------------------------------------

    def redemption_json(self, i: int) -> dict[str, Any]:
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

    def get_redemption(self, redemption_id: str) -> dict[str, Any]:
        """``GET /v1/redemptions/{id}`` (also finds rollbacks made through the API)."""
        with self.lock:
            for rollback in self.rollbacks.values():
                if rollback["id"] == redemption_id:
                    return rollback
            i = self.dataset.index_of("redemption", redemption_id)
            if i is None:
                raise not_found("redemption", redemption_id)
            return self.redemption_json(i)

    def list_redemptions(self, limit: int, page: int, *, order: str | None, after: str | None,
                         before: str | None, result: str | None, customer: str | None,
                         campaign: str | None) -> dict[str, Any]:
        """``GET /v1/redemptions``: newest first by default; filters by time, result, customer, campaign."""
        try:
            after_ms = parse_time(after) if after else None
            before_ms = parse_time(before) if before else None
        except FilterError as err:
            raise ApiFailure(400, "invalid_query_params", "Invalid query params", str(err)) from None
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
        with self.lock:
            items = [self.redemption_json(i) for i in chosen]
        return {"object": "list", "data_ref": "redemptions", "redemptions": items, "total": total}

    def voucher_redemptions(self, code: str) -> dict[str, Any]:
        """``GET /v1/vouchers/{code}/redemption``."""
        suffix = code.rsplit("-", 1)[-1]
        i = int(suffix) if suffix.isdigit() else -1
        if not (0 <= i < self.dataset.count("voucher")) or self.dataset.voucher_code(i) != code:
            raise not_found("voucher", code)
        entries = [self.redemption_json(r) for r in range(self.dataset.count("redemption"))
                   if self.dataset.row("redemption", r)["voucher_code"] == code]
        voucher = self.dataset.row("voucher", i)
        redeemed = sum(1 for e in entries if e["object"] == "redemption" and e["result"] == "SUCCESS")
        return {"quantity": voucher["redemption_quantity"], "redeemed_quantity": redeemed, "object": "list",
                "url": f"/v1/vouchers/{code}/redemptions?page=1&limit=10", "data_ref": "redemption_entries",
                "total": len(entries), "redemption_entries": entries}

    def rollback(self, redemption_id: str, reason: str | None, tracking_id: str | None) -> dict[str, Any]:
        """``POST /v1/redemptions/{id}/rollback``: only a successful, not yet rolled back redemption."""
        with self.lock:
            original = self.get_redemption(redemption_id)
            if original["object"] != "redemption" or original["result"] != "SUCCESS":
                raise ApiFailure(400, "invalid_redemption", "Invalid redemption",
                                 f"Redemption {redemption_id} cannot be rolled back", redemption_id, "redemption")
            if original["status"] == "ROLLED_BACK":
                raise ApiFailure(400, "already_rolled_back", "Already rolled back",
                                 f"Redemption {redemption_id} has already been rolled back", redemption_id,
                                 "redemption")
            rollback = {**original, "id": self._new_id("rr_"), "object": "redemption_rollback",
                        "date": iso_ms(now_ms()), "redemption": redemption_id, "reason": reason or "",
                        "status": "SUCCEEDED", "result": "SUCCESS", "related_object_type": "redemption",
                        "related_object_id": redemption_id}
            if tracking_id:
                rollback["tracking_id"] = tracking_id
            self.rollbacks[redemption_id] = rollback
            self.revision += 1
            return rollback


def _change_window_candidates(filters: Any) -> tuple[int | None, int | None]:
    """Creation-time range holding every record a change window (``or`` of created_at and updated_at
    windows) can match: updates come at most HISTORY_SPAN_MS after creation. (None, None): no such filter."""
    if not isinstance(filters, dict) or filters.get("junction") != "or" or set(filters) != {
            "junction", "created_at", "updated_at"}:
        return None, None
    try:
        created = filters["created_at"]["conditions"]
        updated = filters["updated_at"]["conditions"]
        after = min(parse_time(created["$after"][0]), parse_time(updated["$after"][0]) - HISTORY_SPAN_MS)
        before = max(parse_time(created["$before"][0]), parse_time(updated["$before"][0]))
    except (KeyError, IndexError, TypeError, FilterError):
        return None, None
    return after - 1, before + 1  # a margin for any bound rule; the predicate decides exactly
