"""What tests check a pipeline against: the records a correct extractor must land, the current state."""

from __future__ import annotations

from typing import Any

from voucherify_provider import catalog
from voucherify_provider.emulator.dataset import HISTORY_OBJECTS, HISTORY_SPAN_MS, render_row
from voucherify_provider.emulator.filters import parse_time
from voucherify_provider.emulator.shared import Shared


class GroundTruth:
    """Answers from the dataset directly, whatever the API's bound handling or the export settings."""

    def __init__(self, shared: Shared) -> None:
        self.shared, self.dataset = shared, shared.dataset

    def window(self, name: str, start: str | None, end: str | None, with_ids: bool,
               placed_by: str = "created") -> dict[str, Any]:
        """Records of an object in [start, end) at the data clock: what a correct extractor must land.

        ``placed_by="created"`` places a record by its creation (created_at windows, snapshots);
        ``"last_change"`` by its last change, updated_at else created_at (change windows). Deleted records
        are in neither.
        """
        obj = catalog.get_object(name)
        start_ms = parse_time(start) if start else None
        end_ms = parse_time(end) if end else None
        as_of = self.shared.as_of()
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
        as_of = parse_time(at) if at else self.shared.as_of()
        kinds = [obj.field_type(f).value for f in fields_]
        rows = []
        for i in range(self.dataset.count(obj.name)):
            if self.dataset.exists(obj.name, i, as_of):
                row = self.dataset.row(obj.name, i, as_of)
                rows.append(render_row(row, fields_, kinds, "fixed2"))
        return {"object": obj.name, "as_of": at or self.shared.config.data_clock or None, "fields": fields_,
                "rows": rows}
