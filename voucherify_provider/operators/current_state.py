"""Operators keeping an object's current-state table (Delta Lake) up to date from landed partitions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ObjectStoragePath

from voucherify_provider import catalog
from voucherify_provider.arguments import is_templated
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.destination import check_destination, destination_path, staging_owner
from voucherify_provider.outcomes import config_errors_fail_task, fail_task
from voucherify_provider.privacy import DELETED_RECORDS
from voucherify_provider.utc import as_utc
from voucherify_provider.window import Window

if TYPE_CHECKING:
    from airflow.sdk import Context


class _CurrentStateOperator(BaseOperator):
    """What the current-state operators share: the object, the destination, the table under it."""

    template_fields: Sequence[str] = ("exported_object", "destination", "destination_conn_id")
    ui_color = "#e0ecff"

    def __init__(self, *, exported_object: str, destination: str, destination_conn_id: str | None = None,
                 **kwargs: Any) -> None:
        if not is_templated(destination):
            check_destination(destination)  # an unsupported store fails at parse time
        super().__init__(**kwargs)
        self.exported_object = exported_object
        self.destination = destination
        self.destination_conn_id = destination_conn_id

    def _target(self) -> tuple[catalog.ExportedObject, ObjectStoragePath]:
        from voucherify_provider.landing.current_state import table_path

        obj = catalog.get_object(self.exported_object)
        if not obj.incremental:
            raise VoucherifyConfigError(
                f"{obj.name} has no current-state table: only objects landed in change windows do "
                f"({', '.join(o.name for o in catalog.OBJECTS.values() if o.incremental)}).")
        return obj, table_path(destination_path(self.destination, self.destination_conn_id), obj)

    def _partition(self, landed: Mapping[str, Any]) -> ObjectStoragePath:
        if not isinstance(landed, Mapping) or "partition" not in landed:
            fail_task(f"Expected a landing task's result (its manifest with 'partition'), got {landed!r}.")
        return ObjectStoragePath(str(landed["partition"]), conn_id=self.destination_conn_id)


class VoucherifyMergeCurrentStateOperator(_CurrentStateOperator):
    """Merge landed change partitions into ``<destination>/current/<object>`` (a Delta Lake table).

    The latest version of each record wins (by updated_at, else created_at), so merging a window again
    changes nothing and windows may be merged in any order. The table is partitioned by creation month:
    a merge reads only the months its changes belong to and rewrites only the files holding an older
    version, in bounded memory whatever the table's size (a table of the older unpartitioned layout is
    migrated by the first merge). Returns the counts per landed partition, or per history summary (rows
    updated, inserted and copied, files scanned, removed and added, months touched).

    :param landed: what the landing task(s) returned (``land.output``): one manifest or a list of them, or
        the summary of a history load (``partition_schedule``), whose partitions are merged in one pass.
    :param exported_object: order, customer or voucher.
    :param destination: the same base path or URL the landing used.
    :param destination_conn_id: connection for the destination's filesystem.
    """

    template_fields: Sequence[str] = (*_CurrentStateOperator.template_fields, "landed")

    def __init__(self, *, landed: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.landed = landed

    def execute(self, context: Context) -> list[dict[str, int]]:
        """Merge each landed partition, oldest window first; a history load's partitions in one pass."""
        from voucherify_provider.landing.current_state import merge_partitions

        with config_errors_fail_task():
            obj, table = self._target()
        landed = [self.landed] if isinstance(self.landed, Mapping) else list(self.landed or [])
        landed.sort(key=lambda m: str(m.get("window_start", "")) if isinstance(m, Mapping) else "")
        owner = staging_owner(context) or "merge"
        results = []
        for result in landed:
            if not isinstance(result, Mapping):
                fail_task(f"Expected a landing task's result (a manifest or a history summary), got {result!r}.")
            if result.get("mode") != "changes":
                fail_task(f"{result.get('partition') or result.get('window_start')} was landed as "
                          f"{result.get('mode')!r}; only change windows (VoucherifyCreateExportOperator("
                          "incremental=True)) can be merged.")
            # A history load's summary lists its partitions: all of them go in one merge.
            manifests = result["partitions"] if "partitions" in result else [result]
            with config_errors_fail_task():
                results.append(merge_partitions(table, obj, [self._partition(m) for m in manifests], owner))
        return results


class VoucherifyMarkDeletedOperator(_CurrentStateOperator):
    """Mark deleted, in the current-state table, the records a full id list no longer holds.

    Run it on a periodic full export of the object's ids and creation times (``windowed=False``,
    ``fields=["id", "created_at"]``: the creation month places each id in its partition) landed by
    VoucherifyDownloadToWarehouseOperator: a live record changed before ``cutoff`` that the list lacks was
    deleted in Voucherify. By default rows stay in the table with ``_deleted`` true and ``_deleted_at`` =
    ``cutoff``; ``deleted_records`` can erase what they say about a person instead.

    Then, as this runs periodically, table upkeep: each month's small files (days of inserts) are packed
    into larger ones (``compact``), and the data files no version of the last ``vacuum_retention_hours``
    uses are deleted (Delta keeps every rewritten file until a vacuum).

    :param snapshot: the landing task's result for the id list.
    :param exported_object: order, customer or voucher.
    :param destination: the same base path or URL the landing used.
    :param destination_conn_id: connection for the destination's filesystem.
    :param cutoff: records changed at or after it are left alone (default: the run's data interval end,
        before which the list was exported; a run without one: when it was due).
    :param compact: pack small files first (only months holding several small files are read).
    :param vacuum_retention_hours: how far back the table stays readable as of an older version (time
        travel); None: no vacuum.
    :param deleted_records: ``keep`` (default: flagged, whole, for history), ``redact`` (flagged, with their
        personal fields, metadata and customer reference nulled) or ``remove`` (gone from the table). Older
        table versions keep them until the vacuum; the change partitions keep them until an erasure
        (:class:`~voucherify_provider.operators.erasure.VoucherifyEraseRecordsOperator`).
    """

    template_fields: Sequence[str] = (*_CurrentStateOperator.template_fields, "snapshot", "cutoff")

    def __init__(self, *, snapshot: Any, cutoff: datetime | str | None = None, compact: bool = True,
                 vacuum_retention_hours: int | None = 7 * 24, deleted_records: str = "keep", **kwargs: Any) -> None:
        if deleted_records not in DELETED_RECORDS:
            raise VoucherifyConfigError(f"deleted_records must be one of {', '.join(DELETED_RECORDS)}; got "
                                        f"{deleted_records!r}.")
        super().__init__(**kwargs)
        self.deleted_records = deleted_records
        self.snapshot = snapshot
        self.cutoff = cutoff
        self.compact = compact
        self.vacuum_retention_hours = vacuum_retention_hours

    def execute(self, context: Context) -> dict[str, int]:
        """Compare the table with the id list; mark what is missing; then compact and vacuum."""
        from voucherify_provider.landing.current_state import compact, mark_deleted, vacuum

        with config_errors_fail_task():
            obj, table = self._target()
            cutoff = self._cutoff(context)
            owner = staging_owner(context) or "mark"
            counts = mark_deleted(table, obj, self._partition(self.snapshot), cutoff, owner, self.deleted_records)
        if self.compact:
            counts.update(compact(table, obj, owner))
        if self.vacuum_retention_hours is not None:
            counts["files_vacuumed"] = vacuum(table, int(self.vacuum_retention_hours), owner)
        return counts

    def _cutoff(self, context: Context) -> datetime:
        """The explicit cutoff exactly as given (never moved to the data interval), else the interval's end,
        else when the run was due."""
        if self.cutoff:
            return as_utc(self.cutoff, "cutoff")
        return Window.snapshot(None, context.get("data_interval_end"), context).end
