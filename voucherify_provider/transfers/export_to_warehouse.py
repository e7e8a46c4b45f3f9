"""VoucherifyDownloadToWarehouseOperator: stream a DONE export into typed Parquet, atomically."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from voucherify_provider import DEFAULT_CONN_ID, catalog
from voucherify_provider.arguments import is_templated
from voucherify_provider.errors import VoucherifyConfigError, VoucherifyNotFoundError, VoucherifySecurityError
from voucherify_provider.exports import ExportDescription, ExportStatus
from voucherify_provider.landing.destination import asset_for, destination_path, lineage_dataset_name, staging_owner
from voucherify_provider.landing.paths import path_url
from voucherify_provider.lineage import landing_lineage, no_lineage
from voucherify_provider.outcomes import airflow_exception, config_errors_fail_task, fail_task
from voucherify_provider.utc import as_utc
from voucherify_provider.window import Window

if TYPE_CHECKING:
    from airflow.sdk import Context

    from voucherify_provider.hooks.voucherify import VoucherifyHook

ON_BAD_VALUE = ("fail", "reject")

__all__ = ["VoucherifyDownloadToWarehouseOperator", "lineage_dataset_name"]  # the latter: its 0.1 home


class VoucherifyDownloadToWarehouseOperator(BaseOperator):
    """Land a DONE export as zstd Parquet in ``<destination>/<object>/window_start=<stamp>/``.

    The download is streamed (memory stays bounded whatever the size); chunked results land as one
    dataset; an interrupted download is fetched again, never landed. Columns are typed from the catalog;
    rows outside ``[window_start, window_end)`` are dropped so consecutive windows never share a record.
    Re-running a window replaces it whole, and ``_manifest.json`` (written last) lists the files. Returns
    the manifest, with ``partition``: where it landed.

    :param export_id: the DONE export (templated; usually the create task's XCom).
    :param destination: base path or URL (local, ``file://``, ``s3://``, any ObjectStoragePath scheme).
    :param destination_conn_id: connection for the destination's filesystem.
    :param exported_object: expected object (checked against the export); read from the export if None.
    :param window_start: window start naming the partition; default ``data_interval_start``.
    :param window_end: window end; default ``data_interval_end``.
    :param voucherify_conn_id: the ``voucherify`` connection the export was created with.
    :param on_bad_value: ``fail`` (default) or ``reject``: set unparseable rows aside in
        ``rejected-<export_id>.csv`` beside the data.
    :param max_download_attempts: tries per file when a download breaks off.
    :param row_group_rows: rows per Parquet row group (default 64,000); the buffered row group is most
        of the task's memory.
    :param progress_every_seconds: how often a long download logs its bytes and rate.
    """

    template_fields: Sequence[str] = (
        "export_id", "destination", "destination_conn_id", "exported_object", "window_start", "window_end",
        "voucherify_conn_id",
    )
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        export_id: str,
        destination: str,
        destination_conn_id: str | None = None,
        exported_object: str | None = None,
        window_start: datetime | str | None = None,
        window_end: datetime | str | None = None,
        voucherify_conn_id: str = DEFAULT_CONN_ID,
        on_bad_value: str = "fail",
        max_download_attempts: int = 3,
        row_group_rows: int | None = None,
        progress_every_seconds: float = 30.0,
        **kwargs: Any,
    ) -> None:
        if on_bad_value not in ON_BAD_VALUE:
            raise VoucherifyConfigError(f"on_bad_value must be 'fail' or 'reject', got {on_bad_value!r}.")
        if exported_object and not is_templated(exported_object):
            catalog.get_object(exported_object)
            if "outlets" not in kwargs and not is_templated(destination):
                kwargs["outlets"] = [asset_for(destination, exported_object)]
        super().__init__(**kwargs)
        self.export_id = export_id
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.exported_object = exported_object
        self.window_start = window_start
        self.window_end = window_end
        self.voucherify_conn_id = voucherify_conn_id
        self.on_bad_value = on_bad_value
        self.max_download_attempts = max_download_attempts
        self.row_group_rows = row_group_rows
        self.progress_every_seconds = progress_every_seconds

    @cached_property
    def hook(self) -> VoucherifyHook:
        """The sync hook for this task's connection."""
        from voucherify_provider.hooks.voucherify import VoucherifyHook

        return VoucherifyHook(self.voucherify_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        """Resolve the destination, the export and its window (mistakes fail before any data moves), then
        hand the files to :class:`~voucherify_provider.landing.export_landing.ExportLanding`."""
        from voucherify_provider.landing.export_landing import ExportLanding
        from voucherify_provider.landing.typed_csv import BadExportFileError, arrow_schema
        from voucherify_provider.landing.writer import ROW_GROUP_ROWS, PartitionWriter, ensure_writable

        with config_errors_fail_task():
            for bound, name in ((self.window_start, "window_start"), (self.window_end, "window_end")):
                if bound is not None:  # bad explicit bounds fail before any API call
                    as_utc(bound, name)
            base = destination_path(self.destination, self.destination_conn_id)
            if self.exported_object:  # prove the destination is writable before spending API calls
                ensure_writable(base / self.exported_object)
            export = self._done_export()
            obj = catalog.get_object(str(export.exported_object))
            fields = export.fields or list(obj.default_fields)
            window = (Window.for_run if export.windowed else Window.snapshot)(self.window_start, self.window_end,
                                                                               context)
            if export.windowed:
                self._check_window(export, window)
            writer = PartitionWriter(
                base / obj.name / window.partition, arrow_schema(obj, fields), owner=staging_owner(context),
                metadata={"voucherify.export_id": self.export_id, "voucherify.object": obj.name,
                          "voucherify.window_start": window.start.isoformat(),
                          "voucherify.window_end": window.end.isoformat()},
                row_group_rows=self.row_group_rows or ROW_GROUP_ROWS)
            ensure_writable(writer.partition)
        if swept := writer.sweep_staged():
            self.log.info("Removed %d file(s) an earlier try of this task left staged", swept)
        landing = ExportLanding(self.export_id, obj, fields, window, export.windowed, export.is_change_window(obj),
                                writer, self.log, self.on_bad_value, self.max_download_attempts,
                                self.progress_every_seconds)
        try:
            manifest = landing.land(self.hook.download_export(self.export_id, export.raw))
        except (BadExportFileError, VoucherifySecurityError) as err:  # the same file or URL on every retry
            writer.abort()
            fail_task(str(err))
        except BaseException:
            writer.abort()
            raise
        self.log.info("Landed %s rows of %s in %s (%d file(s))", manifest["rows"], obj.name, writer.partition,
                      len(manifest["files"]))
        self._emit_asset_event(context, obj.name, writer.partition, manifest)
        self._lineage = (obj.name, writer.partition, manifest)
        return {**manifest, "partition": path_url(writer.partition)}  # where it landed, for downstream tasks

    def _done_export(self) -> ExportDescription:
        """The export, which must be DONE and of this task's object."""
        try:
            export = ExportDescription(self.hook.get_export(self.export_id))
        except VoucherifyNotFoundError as err:
            fail_task(f"Export {self.export_id} does not exist (deleted, expired, or created with another "
                      f"connection); clear the create task to export again. ({err})")
        if export.status != ExportStatus.DONE:
            raise airflow_exception("AirflowException")(
                f"Export {self.export_id} is {export.status}, not DONE; wait for it first "
                "(VoucherifyExportDoneSensor or wait_for_completion=True)."
            )
        if self.exported_object and export.exported_object != self.exported_object:
            fail_task(f"Export {self.export_id} exports {export.exported_object!r}, but this task lands "
                      f"{self.exported_object!r}.")
        return export

    def _check_window(self, export: ExportDescription, window: Window) -> None:
        """A windowed export must be this task's window."""
        after, before = export.created_at_bounds()
        expected = window.api_filter()["conditions"]
        if (after, before) != (expected["$after"][0], expected["$before"][0]):
            fail_task(
                f"Export {self.export_id} covers created_at after {after} and before {before}, which is not this "
                f"task's window [{window.start.isoformat()}, {window.end.isoformat()}); landing it would mix windows."
            )

    def _emit_asset_event(self, context: Context, obj: str, partition: ObjectStoragePath,
                          manifest: dict[str, Any]) -> None:
        outlet_events = context.get("outlet_events")
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset) and outlet_events is not None:
                outlet_events[outlet].extra = {"partition": str(partition), "rows": manifest["rows"],
                                               "export_id": self.export_id, "object": obj}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the export as input, the object's folder under the destination as output (see
        :func:`voucherify_provider.lineage.landing_lineage`)."""
        lineage = getattr(self, "_lineage", None)
        if lineage is None:
            return no_lineage()
        obj, partition, manifest = lineage
        return landing_lineage(self.hook.settings.base_url, obj, partition, manifest)
