"""Exports through the hook: wait until one is done, read its parts, filter by a creation window."""

from __future__ import annotations

import csv
import io
import time
from typing import Any


def wait_done(hook: Any, export_id: str, timeout: float = 10) -> dict[str, Any]:
    """Poll an export until it leaves SCHEDULED/IN_PROGRESS."""
    deadline = time.monotonic() + timeout
    while True:
        export = hook.get_export(export_id)
        if export["status"] in ("DONE", "ERROR") or time.monotonic() > deadline:
            return export
        time.sleep(0.02)


def read_parts(parts: list[Any]) -> list[list[str]]:
    """Rows (header excluded) of every part of an export, parsed as CSV."""
    rows: list[list[str]] = []
    for part in parts:
        text = b"".join(part.iter_bytes(chunk_size=1024)).decode("utf-8")
        rows.extend(list(csv.reader(io.StringIO(text)))[1:])
    return rows


def window_filter(start: str, end: str) -> dict[str, Any]:
    """A created_at window filter."""
    return {"junction": "and", "created_at": {"conditions": {"$after": [start], "$before": [end]}}}
