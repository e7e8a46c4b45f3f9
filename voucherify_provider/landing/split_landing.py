"""Land one export over a long span (a history load) as the partitions the daily runs would have landed.

The export's rows arrive in one CSV or several chunk files, in any order. Each typed batch is routed by the
time that places its rows (creation, or last change for change windows) into a local spill file per
partition (``spill.py``); then partition after partition is written from its spill file in row groups and
committed exactly as a daily run commits it (``PartitionWriter``: staging, the commit lock, the manifest
last). Memory holds one batch and one row group whatever the span; local disk holds the export once.

Imports pyarrow: the landing operator imports this inside ``execute``.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from voucherify_provider.landing.export_landing import Landing, manifest_schema, rejected_csv
from voucherify_provider.landing.paths import path_url
from voucherify_provider.landing.spill import Spill
from voucherify_provider.landing.typed_csv import (
    ParseStats,
    RejectedRows,
    arrow_schema,
    int64_array,
    int64_values,
    string_array,
)
from voucherify_provider.landing.writer import PartitionWriter
from voucherify_provider.utc import as_utc
from voucherify_provider.window import Window, partition_stamp

if TYPE_CHECKING:
    from voucherify_provider.hooks.voucherify import ExportPart


class _SpillSink:
    """One export file's rows into the spill; a file read again drops what it spilled before."""

    def __init__(self, spill: Spill) -> None:
        self._spill = spill

    def write(self, batch: Any) -> None:
        self._spill.add(batch)

    def close(self) -> None:
        self._spill.checkpoint()

    def abort(self) -> None:
        self._spill.rollback()


@dataclass(kw_only=True)
class SplitLanding(Landing):
    """One export of ``window`` landed into the partitions ``partitions`` (consecutive, tiling the window:
    :meth:`Window.split`), each committed on its own by the writer ``writer_for`` gives it.

    Days without rows get their empty partition, as their daily run would land it.
    """

    partitions: list[Window]
    writer_for: Callable[[Window], PartitionWriter]
    row_group_rows: int
    owner: str | None = None  # the task instance's staging owner: names the spill folder (swept on a retry)
    _starts: Any = field(init=False, repr=False)  # each partition's start, in the placing column's unit
    _stamps: pa.Array = field(init=False, repr=False)  # each partition's name

    def __post_init__(self) -> None:
        import numpy as np

        placing = self.placing[0]
        # A placing column missing from the fields is refused by the reader, with the fix, before any file.
        unit = arrow_schema(self.obj, self.fields).field(placing).type.unit if placing in self.fields else "ms"
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
        self._starts = np.array([round(w.start.timestamp() * per_second) for w in self.partitions], dtype=np.int64)
        self._stamps = string_array([partition_stamp(w.start) for w in self.partitions])

    def land(self, parts: Iterable[ExportPart]) -> dict[str, Any]:
        """Land every file of the export into the spill, then commit each partition; returns a summary with
        every partition landed (its URL, window start and rows)."""
        rejected, totals, progress = self._start()
        schema = self.schema
        landed: list[dict[str, Any]] = []
        with Spill(schema, self._partition_of, owner=self.owner) as spill:
            for part in parts:
                self._land_part(part, lambda: _SpillSink(spill), rejected, totals, progress)
            set_aside = self._rejected_by_partition(rejected)
            token = uuid.uuid4().hex[:8]
            for window in self.partitions:
                key = partition_stamp(window.start)
                manifest, writer = self._commit(window, spill, key, token, set_aside.get(key), totals, progress)
                landed.append({"partition": path_url(writer.partition), "window_start": window.start.isoformat(),
                               "window_end": window.end.isoformat(), "rows": manifest["rows"],
                               "bytes": sum(f["bytes"] for f in manifest["files"])})
        if rejected is not None and rejected.rows:
            self.log.warning("%d row(s) could not be typed; see rejected-%s.csv in their partitions",
                             len(rejected.rows), self.export_id)
        return {"export_id": self.export_id, "exported_object": self.obj.name, "mode": self.mode,
                "window_start": self.window.start.isoformat(), "window_end": self.window.end.isoformat(),
                "fields": self.fields, "schema": manifest_schema(schema),
                "rows": sum(p["rows"] for p in landed), "rows_outside_window": totals.outside_window,
                "rows_rejected": totals.rejected, "bytes_downloaded": progress.bytes, "partitions": landed,
                **(self.policies.manifest() if self.policies else {})}

    def _commit(self, window: Window, spill: Spill, key: str, token: str, rejected: RejectedRows | None,
                totals: ParseStats, progress: Any) -> tuple[dict[str, Any], PartitionWriter]:
        """One partition from its spilled rows, committed as its daily run commits it."""
        writer = self.writer_for(window)
        writer.partition.mkdir(parents=True, exist_ok=True)  # local disks need the folder; stores ignore it
        if swept := writer.sweep_staged():
            self.log.info("Removed %d file(s) an earlier try left staged in %s", swept, writer.partition)
        part = writer.part(f"part-{self.export_id}-{token}.parquet")
        try:
            for chunk in spill.chunks(key, self.row_group_rows):
                for batch in chunk.to_batches():
                    part.write(batch)
            writer.add(part.close())
            if rejected is not None and rejected.rows:
                writer.write_side_file(f"rejected-{self.export_id}.csv", rejected_csv(rejected))
            # Counts of the whole export: a row outside one day's window is in another's, not lost.
            stats = ParseStats(spill.rows(key), totals.outside_window, len(rejected.rows) if rejected else 0)
            return writer.commit({**self._manifest(window, stats, progress, writer.schema),
                                  "loaded_with": {"window_start": self.window.start.isoformat(),
                                                  "window_end": self.window.end.isoformat()}}), writer
        except BaseException:
            part.abort()
            writer.abort()
            raise

    def _partition_of(self, batch: pa.RecordBatch) -> pa.Array:
        """Each row's partition: the stamp of the interval its placing time falls in (the reader already
        dropped the rows outside the whole window)."""
        import numpy as np

        columns = [batch.column(f) for f in self.placing]
        placed = columns[0] if len(columns) == 1 else pc.coalesce(*columns)
        index = np.searchsorted(self._starts, int64_values(placed.cast(pa.int64())), side="right") - 1
        return pc.take(self._stamps, int64_array(index))

    def _rejected_by_partition(self, rejected: RejectedRows | None) -> dict[str, RejectedRows]:
        """Rows that could not be typed, each with the partition its first readable placing time names (clamped
        to the window; none readable: the window's first partition): they stay beside the rows of their day."""
        if rejected is None or not rejected.rows:
            return {}
        starts = [w.start for w in self.partitions]
        columns = [rejected.fields.index(f) for f in self.placing]
        routed: dict[str, RejectedRows] = {}
        for row, reason in zip(rejected.rows, rejected.reasons, strict=True):
            index = 0
            for value in (row[c] for c in columns if row[c]):
                try:
                    moment = as_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")), "placed")
                except (ValueError, TypeError):
                    continue
                index = max(0, min(len(starts) - 1, bisect.bisect_right(starts, moment) - 1))
                break
            key = partition_stamp(self.partitions[index].start)
            routed.setdefault(key, RejectedRows(rejected.fields)).add(row, reason)
        return routed
