"""Export files: the rows an export matches, rendered as CSV on the fly or once into ``export_cache_dir``."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voucherify_provider import catalog
from voucherify_provider.emulator.dataset import HISTORY_SPAN_MS, field_value, render_row
from voucherify_provider.emulator.filters import FilterError, compile_filters, parse_time
from voucherify_provider.emulator.shared import Shared

CSV_BUFFER = 256 * 1024


def _read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


class ExportFiles:
    """Renders what an export (its object and parameters) holds; serves each file of it."""

    def __init__(self, shared: Shared) -> None:
        self.shared, self.config, self.dataset = shared, shared.config, shared.dataset
        self._rendered: list[Path] = []
        self.reset()

    def reset(self) -> None:
        """Delete the rendered files: ids restart after a reset, so files of the old exports must go."""
        for path in self._rendered:
            path.unlink(missing_ok=True)
        self._rendered = []
        self._file_keys: dict[tuple[str, int], str] = {}
        self._render_lock = threading.Lock()

    def row_count(self, exported_object: str, parameters: dict[str, Any]) -> int:
        """Rows the export matches at the data clock."""
        return sum(1 for _ in self._matching_indexes(exported_object, parameters))

    def serve(self, export_id: str, exported_object: str, parameters: dict[str, Any], part: int) -> Iterator[bytes]:
        """What the download host serves: rendered on the fly, or once into ``export_cache_dir`` then read.

        A generator, so the rendering happens while the response streams (in the server's thread pool).
        """
        if not self.config.export_cache_dir:
            yield from self.csv_stream(exported_object, parameters, part)
            return
        with self._render_lock:  # one rendering per file, even when downloads race
            # An export's file is fixed at its first download, whatever changes in the data afterwards.
            key = self._file_keys.setdefault((export_id, part), self._content_key(exported_object, parameters, part))
            path = Path(self.config.export_cache_dir) / f"{key}.csv"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                with tmp.open("wb") as out:
                    for chunk in self.csv_stream(exported_object, parameters, part):
                        out.write(chunk)
                tmp.rename(path)
                self._rendered.append(path)
        yield from _read_file(path)

    def _content_key(self, exported_object: str, parameters: dict[str, Any], part: int) -> str:
        """Names a rendered file by what it holds, so a new export of the same data (a benchmark's repeated
        runs, a retried window) is served from the file already rendered, like the real API's storage."""
        c = self.config
        identity = [exported_object, parameters, part, self.shared.revision, c.seed, c.scale, c.start, c.end,
                    c.money_format, c.csv_headers, c.chunk_rows, c.after_inclusive, c.before_inclusive,
                    c.data_clock, c.or_junction]
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def csv_stream(self, exported_object: str, parameters: dict[str, Any], part: int) -> Iterator[bytes]:
        """The CSV file (or one part of it) in buffers of about 256 KiB."""
        obj = catalog.OBJECTS[exported_object]
        fields_ = parameters.get("fields") or list(obj.default_fields)
        kinds = [obj.field_type(f).value for f in fields_]
        indexes: Iterator[int] = self._matching_indexes(exported_object, parameters)
        if self.config.chunk_rows > 0:
            size = self.config.chunk_rows
            indexes = itertools.islice(indexes, part * size, (part + 1) * size)
        money, buffer = self.config.money_format, io.StringIO()
        writer = csv.writer(buffer)
        headers = fields_ if self.config.csv_headers == "keys" else [obj.label(f) for f in fields_]
        writer.writerow(headers)
        as_of = self.shared.as_of()
        for i in indexes:
            row = self.dataset.row(obj.name, i, as_of)
            writer.writerow(render_row(row, fields_, kinds, money))
            if buffer.tell() >= CSV_BUFFER:
                yield buffer.getvalue().encode("utf-8")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode("utf-8")

    def _matching_indexes(self, exported_object: str, parameters: dict[str, Any]) -> Iterator[int]:
        obj = catalog.OBJECTS[exported_object]
        bounds = (self.config.after_inclusive, self.config.before_inclusive)
        filters = parameters.get("filters")
        per_condition = self.config.or_junction == "condition"
        predicate, (after, before) = compile_filters(filters, set(obj.fields), obj.created_field, bounds,
                                                     or_per_condition=per_condition)
        if after is None and before is None and not per_condition:
            after, before = _change_window_candidates(filters)
        indexes: range = self.dataset.index_range(obj.name, after, before, *bounds)
        as_of = self.shared.as_of()
        order = parameters.get("order") or ""
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
