"""Exports: validation, the SCHEDULED -> IN_PROGRESS -> DONE lifecycle, download tokens, listing."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from voucherify_provider import catalog
from voucherify_provider.emulator.api_errors import api_error, invalid_payload, not_found, unauthorized
from voucherify_provider.emulator.config import EmulatorConfig
from voucherify_provider.emulator.dataset import MASK, iso_ms, mix
from voucherify_provider.emulator.exports.files import ExportFiles
from voucherify_provider.emulator.filters import FilterError, compile_filters
from voucherify_provider.emulator.shared import Shared, now_ms

EXPORT_LIST_ORDERS = ("created_at", "-created_at", "status", "-status")


@dataclass
class ExportRecord:
    """One export and what it takes to serve its file."""

    id: str
    exported_object: str
    parameters: dict[str, Any]
    created_clock: float  # the exports model's clock at creation: the lifecycle runs on that clock
    created_at_ms: int
    fails: bool = False
    tokens: list[tuple[str, float]] = field(default_factory=list)
    row_count: int | None = None
    # Where in [in_progress_seconds, in_progress_seconds_max] this export's duration falls (0..1).
    duration_draw: float = 0.0

    def status(self, config: EmulatorConfig, now: float, rows: int | None = None) -> str:
        """Status as time passes: SCHEDULED -> IN_PROGRESS -> DONE (or ERROR).

        ``rows`` (the export's size) lengthens IN_PROGRESS by ``rows / export_rows_per_second`` when that
        rate is set; ``None`` adds nothing.
        """
        age = now - self.created_clock
        if age < config.scheduled_seconds:
            return "SCHEDULED"
        spread = max(0.0, config.in_progress_seconds_max - config.in_progress_seconds)
        in_progress = config.in_progress_seconds + spread * self.duration_draw
        if rows is not None and config.export_rows_per_second > 0:
            in_progress += rows / config.export_rows_per_second
        if age < config.scheduled_seconds + in_progress:
            return "IN_PROGRESS"
        return "ERROR" if self.fails else "DONE"


class ExportsModel:
    """The exports made through the API and their files.

    ``clock`` (seconds, default :func:`time.monotonic`) drives export latency and download-token lifetime:
    tests swap in a clock they advance by hand instead of sleeping.
    """

    def __init__(self, shared: Shared, clock: Callable[[], float] = time.monotonic) -> None:
        self.shared, self.config, self.clock = shared, shared.config, clock
        self.files = ExportFiles(shared)
        self.reset()

    def reset(self) -> None:
        """Forget every export, the download tokens issued and the rendered files."""
        with self.shared.lock:
            self.records: dict[str, ExportRecord] = {}
            # Every export ever made, deleted ones included, for tests counting what a run left behind.
            self.history: dict[str, ExportRecord] = {}
            self.issued_tokens: list[str] = []
            self.files.reset()

    def create(self, body: Any, *, orders_endpoint: bool, fails: bool) -> dict[str, Any]:
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
                raise api_error(400, "invalid_export_fields", "Invalid Export",
                                f"Unsupported field used. Allowed fields: {', '.join(obj.fields)}")
        order = params.get("order")
        if order is not None and order not in obj.allowed_orders:
            raise invalid_payload(f"Property .parameters.order should be one of [ {', '.join(obj.allowed_orders)} ]")
        try:
            compile_filters(params.get("filters"), set(obj.fields), obj.created_field, (False, False))
        except FilterError as err:
            raise invalid_payload(str(err)) from None
        with self.shared.lock:
            export_id = self.shared.new_id("exp_")
            record = ExportRecord(
                id=export_id, exported_object=name,
                parameters={k: params[k] for k in ("order", "fields", "filters") if k in params},
                created_clock=self.clock(), created_at_ms=now_ms(), fails=fails,
                duration_draw=mix(self.config.seed, int(export_id[-8:], 16), 11) / MASK,
            )
            self.records[record.id] = self.history[record.id] = record
            # The create answer is an ExportScheduledBase: always SCHEDULED, and ``user_id`` a required
            # non-null string (GET answers null for API-channel exports, as every official example shows).
            # Its status is given, not computed, so creating never counts the export's rows.
            return {**self.to_json(record, base_url="", status="SCHEDULED"), "result": None, "user_id": ""}

    def _record(self, export_id: str) -> ExportRecord:
        record = self.records.get(export_id)
        if record is None:
            raise not_found("export", export_id)
        return record

    def to_json(self, record: ExportRecord, base_url: str, status: str | None = None) -> dict[str, Any]:
        """The export object as the API returns it (``result`` holds the file URLs once DONE).

        ``status`` overrides the one the clock gives.
        """
        status = status or self._status(record, self.clock())
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
        ttl, now = self.config.download_token_ttl_seconds, self.clock()
        if not record.tokens or (ttl > 0 and now - record.tokens[-1][1] >= ttl):
            token = secrets.token_urlsafe(24)
            record.tokens.append((token, now))
            self.issued_tokens.append(token)
        return record.tokens[-1][0]

    def get(self, export_id: str, base_url: str) -> dict[str, Any]:
        """``GET /v1/exports/{id}``."""
        with self.shared.lock:
            return self.to_json(self._record(export_id), base_url)

    def delete(self, export_id: str) -> None:
        """``DELETE /v1/exports/{id}``."""
        with self.shared.lock:
            self._record(export_id)
            del self.records[export_id]

    def ledger(self) -> dict[str, Any]:
        """Every export made since the last reset, with whether it was deleted (``/_emulator/exports``)."""
        with self.shared.lock:
            now = self.clock()
            exports = [{"id": r.id, "exported_object": r.exported_object, "parameters": r.parameters,
                        "created_at": iso_ms(r.created_at_ms), "status": self._status(r, now),
                        "deleted": r.id not in self.records} for r in self.history.values()]
        return {"created": len(exports), "deleted": sum(e["deleted"] for e in exports),
                "remaining": sum(not e["deleted"] for e in exports), "exports": exports}

    def list(self, limit: int, page: int, order: str | None, base_url: str) -> dict[str, Any]:
        """``GET /v1/exports``."""
        with self.shared.lock:
            records = list(self.records.values())
            key = (order or "-created_at").lstrip("-")
            now = self.clock()
            records.sort(key=lambda r: (self._status(r, now) if key == "status" else r.created_at_ms, r.id),
                         reverse=(order or "-created_at").startswith("-"))
            window = records[(page - 1) * limit : page * limit]
            return {"object": "list", "data_ref": "exports", "total": len(records),
                    "exports": [self.to_json(r, base_url) for r in window]}

    def authorize_download(self, export_id: str, token: str | None) -> ExportRecord:
        """Check the download token: unknown or expired tokens are 401, as on the real download host."""
        with self.shared.lock:
            record = self.records.get(export_id)
            ttl, now = self.config.download_token_ttl_seconds, self.clock()
            valid = record is not None and any(
                t == token and (ttl <= 0 or now - issued < ttl) for t, issued in record.tokens)
            if not valid or record is None or self._status(record, now) != "DONE":
                raise unauthorized()
            return record

    def _status(self, record: ExportRecord, now: float) -> str:
        # Rows are counted only when the size matters: counting walks the dataset, costly for big exports.
        rows = self._rows(record) if self.config.export_rows_per_second > 0 else None
        return record.status(self.config, now, rows)

    def _rows(self, record: ExportRecord) -> int:
        """Rows the export holds, counted once (at the data clock of that moment) and then remembered."""
        if record.row_count is None:
            record.row_count = self.files.row_count(record.exported_object, record.parameters)
        return record.row_count

    def part_count(self, record: ExportRecord) -> int:
        """Number of files the result is split into (``chunk_rows`` setting)."""
        if self.config.chunk_rows <= 0:
            return 1
        return max(1, -(-self._rows(record) // self.config.chunk_rows))

    def file(self, record: ExportRecord, part: int) -> Iterator[bytes]:
        """The bytes of one file of a DONE export, as the download host serves them."""
        return self.files.serve(record.id, record.exported_object, record.parameters, part)
