"""Land the files of one DONE export into a partition: each file streamed through the typed CSV reader
into its own Parquet file, downloaded again when the transfer breaks off, read again to name a bad row,
progress logged, unparseable rows set aside, and the manifest committed last.

Imports pyarrow: the landing operator imports this inside ``execute``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from voucherify_provider import __version__, catalog
from voucherify_provider.errors import VoucherifyDownloadError
from voucherify_provider.landing.stream import IterStream
from voucherify_provider.landing.typed_csv import (
    NeedsDiagnosis,
    ParseStats,
    RejectedRows,
    TypedCsvReader,
    landed_schema,
)
from voucherify_provider.landing.writer import PartitionWriter, read_manifest
from voucherify_provider.window import Window

if TYPE_CHECKING:
    from voucherify_provider.hooks.voucherify import ExportPart
    from voucherify_provider.landing.column_policies import AppliedPolicies


class DownloadProgress:
    """Logs bytes and rate every ``every`` seconds of a long download."""

    def __init__(self, log: logging.Logger | Any, label: str, every: float) -> None:
        self.log, self.label, self.every = log, label, every
        self.started = self.last = time.monotonic()
        self.bytes = 0

    def add_bytes(self, size: int) -> None:
        """Count downloaded bytes; log when ``every`` seconds passed since the last line."""
        self.bytes += size
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.bytes / max(now - self.started, 1e-9) / 1e6
            self.log.info("%s: %.1f MB downloaded (%.1f MB/s)", self.label, self.bytes / 1e6, rate)


class FileSink(Protocol):
    """Where the typed rows of one export file go while it is read: kept on ``close``, dropped on ``abort``."""

    def write(self, batch: Any) -> None:
        """Take rows."""

    def close(self) -> None:
        """Keep what was written."""

    def abort(self) -> None:
        """Drop what was written (the file is read again, or the landing fails)."""


class _PartSink:
    """One export file into one Parquet file of the partition."""

    def __init__(self, writer: PartitionWriter, name: str) -> None:
        self._writer, self._part = writer, writer.part(name)

    def write(self, batch: Any) -> None:
        self._part.write(batch)

    def close(self) -> None:
        self._writer.add(self._part.close())

    def abort(self) -> None:
        self._part.abort()


@dataclass(kw_only=True)
class Landing:
    """What a landing of one DONE export needs whatever it lands into, and the per-file loop.

    ``window`` (None for snapshots) filters the rows; ``place_by`` (change windows) names the columns
    whose latest value places a row in the window. ``on_bad_value`` is ``fail`` or ``reject``. ``policies``:
    the column policies the reader applies (dropped columns never read, hashed ones hashed).
    """

    export_id: str
    obj: catalog.ExportedObject
    fields: list[str]
    window: Window
    windowed: bool
    changes: bool
    log: logging.Logger | Any
    on_bad_value: str = "fail"
    max_download_attempts: int = 3
    progress_every_seconds: float = 30.0
    policies: AppliedPolicies | None = None

    @property
    def schema(self) -> Any:
        """The landed schema (the export's fields under the column policies)."""
        return landed_schema(self.obj, self.fields, self.policies)

    @property
    def place_by(self) -> list[str] | None:
        """Change windows place a record by its last change; created_at windows by its creation."""
        return [self.obj.updated_field or "", self.obj.created_field or ""] if self.changes else None

    @property
    def placing(self) -> list[str]:
        """The columns placing a row, the first non-null one wins (the reader's ``place_by``)."""
        return self.place_by or [self.obj.created_field or ""]

    @property
    def mode(self) -> str:
        """``changes``, ``window`` or ``snapshot``: how the manifest names this landing."""
        return "changes" if self.changes else "window" if self.windowed else "snapshot"

    def _start(self) -> tuple[RejectedRows | None, ParseStats, DownloadProgress]:
        rejected = RejectedRows(self.schema.names) if self.on_bad_value == "reject" else None
        return rejected, ParseStats(), DownloadProgress(self.log, f"Export {self.export_id}",
                                                        self.progress_every_seconds)

    def _land_part(self, part: ExportPart, open_sink: Callable[[], FileSink], rejected: RejectedRows | None,
                   totals: ParseStats, progress: DownloadProgress) -> None:
        """One file into a sink: again from the start when the download breaks off (up to
        ``max_download_attempts``), or in diagnosis mode when a batch holds a bad value."""
        attempt, diagnose = 1, False
        while True:
            # The reader first: it refuses fields it cannot place rows by before any file is staged.
            reader = TypedCsvReader(self.obj, self.fields, window=self.window if self.windowed else None,
                                    place_by=self.place_by, rejected=rejected, diagnose=diagnose,
                                    label=f"Export {self.export_id} file {part.index + 1}/{part.count}",
                                    policies=self.policies)
            sink = open_sink()
            rejected_before = len(rejected.rows) if rejected is not None else 0
            try:
                for batch in reader.batches(IterStream(part.iter_bytes(), progress.add_bytes)):
                    sink.write(batch)
                sink.close()
            except (NeedsDiagnosis, VoucherifyDownloadError) as err:
                sink.abort()
                if rejected is not None:  # the file is read again: what it rejected so far comes again too
                    del rejected.rows[rejected_before:], rejected.reasons[rejected_before:]
                if isinstance(err, NeedsDiagnosis):
                    self.log.warning("%s; reading the file again to find the row", err)
                    diagnose = True
                    continue
                if attempt == self.max_download_attempts:
                    raise
                attempt += 1
                self.log.warning("%s; attempt %d of %d, downloading again", err, attempt,
                                 self.max_download_attempts)
                continue
            except BaseException:
                sink.abort()
                raise
            for key in ("rows", "outside_window", "rejected"):
                setattr(totals, key, getattr(totals, key) + getattr(reader.stats, key))
            return

    def _manifest(self, window: Window, totals: ParseStats, progress: DownloadProgress,
                  schema: Any) -> dict[str, Any]:
        """What a partition's manifest says besides its files (the writer adds rows and files)."""
        return {
            "export_id": self.export_id, "exported_object": self.obj.name, "mode": self.mode,
            "placed_by": self.place_by or ([self.obj.created_field] if self.windowed else []),
            "window_start": window.start.isoformat(), "window_end": window.end.isoformat(),
            "fields": self.fields, "schema": manifest_schema(schema),
            "rows_outside_window": totals.outside_window, "rows_rejected": totals.rejected,
            "bytes_downloaded": progress.bytes, "written_at": datetime.now(timezone.utc).isoformat(),
            "provider_version": __version__, **(self.policies.manifest() if self.policies else {}),
        }


@dataclass(kw_only=True)
class ExportLanding(Landing):
    """One export's landing into ``writer``'s partition (its window, or a snapshot's)."""

    writer: PartitionWriter

    def land(self, parts: Iterable[ExportPart]) -> dict[str, Any]:
        """Land every file of the export, then commit; returns the manifest."""
        rejected, totals, progress = self._start()
        token = uuid.uuid4().hex[:8]  # keeps this run's file names apart from an earlier run of the export
        for part in parts:
            suffix = f"-{part.index:04d}" if part.count > 1 else ""
            name = f"part-{self.export_id}-{token}{suffix}.parquet"
            self._land_part(part, partial(_PartSink, self.writer, name), rejected, totals, progress)
        if rejected is not None and rejected.rows:
            self.writer.write_side_file(f"rejected-{self.export_id}.csv", rejected_csv(rejected))
            self.log.warning("%d row(s) could not be typed; see rejected-%s.csv", len(rejected.rows),
                             self.export_id)
        return self.writer.commit(self._manifest(self.window, totals, progress, self.writer.schema))


def manifest_schema(schema: Any) -> list[dict[str, str]]:
    """The manifest's description of the landed columns: Arrow type, the catalog's type and (amounts) unit."""
    return [{"name": f.name, "type": str(f.type),
             **{key.decode(): value.decode() for key, value in (f.metadata or {}).items()
                if key in (b"voucherify_type", b"voucherify_unit")}}
            for f in schema]


def rejected_csv(rejected: RejectedRows) -> bytes:
    """The rows that could not be typed, as CSV with an ``_error`` column saying why."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*rejected.fields, "_error"])
    for row, reason in zip(rejected.rows, rejected.reasons, strict=True):
        writer.writerow([*("" if v is None else v for v in row), reason])
    return buffer.getvalue().encode("utf-8")



def landed_before(base: Any, exported_object: str | None, export_id: str, window_start: Any, window_end: Any,
                  partition_schedule: str | None, context: Any) -> dict[str, Any] | None:
    """What an earlier try of a landing committed from ``export_id``, read back from the manifests (the
    export itself is gone: that try deleted it, then died before reporting success); None if it did not.

    Returns what the landing returned then: the manifest with ``partition``, or a history summary."""
    from voucherify_provider.landing.paths import path_url

    if not exported_object:
        return None
    folder = base / exported_object
    candidates: list[list[Window]] = []
    for make in (Window.for_run, Window.snapshot):
        try:
            window = make(window_start, window_end, context)
        except Exception:  # e.g. no data interval: that kind of landing cannot have been this one
            continue
        if make is Window.for_run and partition_schedule:
            candidates.append(window.split(partition_schedule))
        candidates.append([window])
    for pieces in candidates:
        manifests = [read_manifest(folder / piece.partition) for piece in pieces]
        if not manifests or any(m is None or m.get("export_id") != export_id for m in manifests):
            continue
        landed = [{**m, "partition": path_url(folder / p.partition)} for m, p in zip(manifests, pieces, strict=True)
                  if m is not None]
        if len(landed) == 1:
            return landed[0]
        first = landed[0]
        keys = ("export_id", "exported_object", "mode", "fields", "schema", "column_policies", "hash")
        return {**{k: first[k] for k in keys if k in first},
                "window_start": pieces[0].start.isoformat(), "window_end": pieces[-1].end.isoformat(),
                "rows": sum(m["rows"] for m in landed),
                "partitions": [{"partition": m["partition"], "window_start": m["window_start"],
                                "window_end": m["window_end"], "rows": m["rows"],
                                "bytes": sum(f["bytes"] for f in m["files"])} for m in landed]}
    return None

