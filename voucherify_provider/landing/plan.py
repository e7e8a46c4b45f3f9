"""What a landing of one DONE export will do, resolved before any data moves: its partitions and writers, the
column policies with their key, the landing (one partition, or a long window split into a schedule's), and,
once it ran, what it reports (log line, Asset event, lineage, the task's result).

Imports pyarrow: the landing operator imports this inside ``execute``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath

from voucherify_provider import catalog
from voucherify_provider.landing.column_policies import AppliedPolicies
from voucherify_provider.landing.export_landing import ExportLanding
from voucherify_provider.landing.paths import path_url
from voucherify_provider.landing.split_landing import SplitLanding
from voucherify_provider.landing.typed_csv import landed_schema
from voucherify_provider.landing.writer import ROW_GROUP_ROWS, PartitionWriter, ensure_writable
from voucherify_provider.privacy import check_hash_key_source, parse_policies, resolve_hash_key
from voucherify_provider.window import Window

if TYPE_CHECKING:
    from voucherify_provider.exports import ExportDescription
    from voucherify_provider.hooks.voucherify import ExportPart


def resolve_policies(obj: catalog.ExportedObject, spec: Any, conn_id: str | None,
                     variable: str | None) -> AppliedPolicies:
    """Column policies checked against the object, with the hash key read when a column is hashed."""
    policies = parse_policies(obj, spec)
    check_hash_key_source(policies, conn_id, variable)
    return AppliedPolicies(policies, resolve_hash_key(conn_id, variable) if policies.hashed else None)


@dataclass
class Outcome:
    """What a finished landing reports: the task's result, the partition naming its Asset event and
    lineage, the event's extra, the manifest lineage reads, and the log line."""

    result: dict[str, Any]
    partition: ObjectStoragePath
    event: dict[str, Any]
    lineage_manifest: dict[str, Any]
    message: str


@dataclass
class LandingPlan:
    """One export's landing: ``pieces`` (one window, or a long one split by ``partition_schedule``), the
    writer of each (``writer_for``; ``writer``: the window's), and the landing that fills them."""

    export_id: str
    obj: catalog.ExportedObject
    pieces: list[Window]
    partition_schedule: str | None
    writer_for: Callable[[Window], PartitionWriter]
    writer: PartitionWriter
    landing: ExportLanding | SplitLanding

    def land(self, parts: Iterable[ExportPart]) -> Outcome:
        """Land the export's files; a failure leaves nothing of this run (the previous one stays whole)."""
        if not self.split and (swept := self.writer.sweep_staged()):
            logging.getLogger(__name__).info("Removed %d file(s) an earlier try of this task left staged", swept)
        try:
            landed = self.landing.land(parts)
        except BaseException:
            self.writer.abort()
            raise
        return self._split_outcome(landed) if self.split else self._outcome(landed)

    @property
    def split(self) -> bool:
        """Whether the export lands as several partitions."""
        return len(self.pieces) > 1

    def _outcome(self, manifest: dict[str, Any]) -> Outcome:
        partition = self.writer.partition
        return Outcome(
            {**manifest, "partition": path_url(partition)}, partition,
            {"partition": str(partition), "rows": manifest["rows"], "export_id": self.export_id,
             "object": self.obj.name}, manifest,
            f"Landed {manifest['rows']} rows of {self.obj.name} in {partition} ({len(manifest['files'])} file(s))")

    def _split_outcome(self, summary: dict[str, Any]) -> Outcome:
        last = self.writer_for(self.pieces[-1]).partition
        return Outcome(
            summary, last,
            {"partition": str(last), "partitions": len(summary["partitions"]), "rows": summary["rows"],
             "export_id": self.export_id, "object": self.obj.name, "window_start": summary["window_start"],
             "window_end": summary["window_end"]},
            {"schema": summary["schema"], "rows": summary["rows"],
             "files": [{"bytes": sum(p["bytes"] for p in summary["partitions"])}]},
            f"Landed {summary['rows']} rows of {self.obj.name} in {len(summary['partitions'])} partitions of "
            f"{self.partition_schedule} under {last.parent}")


def plan_landing(*, base: ObjectStoragePath, export: ExportDescription, export_id: str, window: Window,
                 partition_schedule: str | None, policies: AppliedPolicies, owner: str | None,
                 row_group_rows: int | None, log: logging.Logger | Any, on_bad_value: str,
                 max_download_attempts: int, progress_every_seconds: float) -> LandingPlan:
    """The landing of ``export`` into ``base``, its partitions proven writable (before any download)."""
    obj = catalog.get_object(str(export.exported_object))
    fields = export.fields or list(obj.default_fields)
    pieces = window.split(partition_schedule) if partition_schedule and export.windowed else [window]
    schema, rows_per_group = landed_schema(obj, fields, policies), row_group_rows or ROW_GROUP_ROWS

    def writer_for(piece: Window) -> PartitionWriter:
        return PartitionWriter(
            base / obj.name / piece.partition, schema, owner=owner, row_group_rows=rows_per_group,
            distinct=obj.distinct_fields,
            metadata={"voucherify.export_id": export_id, "voucherify.object": obj.name,
                      "voucherify.window_start": piece.start.isoformat(),
                      "voucherify.window_end": piece.end.isoformat()})

    writer = writer_for(window)
    ensure_writable(writer.partition)
    common: dict[str, Any] = {
        "export_id": export_id, "obj": obj, "fields": fields, "window": window, "windowed": export.windowed,
        "changes": export.is_change_window(obj), "log": log, "on_bad_value": on_bad_value,
        "max_download_attempts": max_download_attempts, "progress_every_seconds": progress_every_seconds,
        "policies": policies}
    landing: ExportLanding | SplitLanding = (
        SplitLanding(partitions=pieces, writer_for=writer_for, row_group_rows=rows_per_group, owner=owner, **common)
        if len(pieces) > 1 else ExportLanding(writer=writer, **common))
    return LandingPlan(export_id, obj, pieces, partition_schedule, writer_for, writer, landing)
