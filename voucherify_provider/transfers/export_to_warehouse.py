"""VoucherifyDownloadToWarehouseOperator: stream a DONE export into typed Parquet, atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from voucherify_provider import DEFAULT_CONN_ID, catalog
from voucherify_provider.arguments import is_templated, with_callback
from voucherify_provider.errors import VoucherifyConfigError, VoucherifyNotFoundError, VoucherifySecurityError
from voucherify_provider.exports import ExportDescription, ExportStatus
from voucherify_provider.landing.destination import (
    asset_for,
    check_destination,
    destination_path,
    lineage_dataset_name,
    staging_owner,
)
from voucherify_provider.lineage import landing_lineage, no_lineage
from voucherify_provider.outcomes import airflow_exception, config_errors_fail_task, fail_task
from voucherify_provider.privacy import check_hash_key_source, parse_policies
from voucherify_provider.utc import as_utc
from voucherify_provider.window import Window, cron_schedule

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
    :param destination: base path or URL: local, ``file://``, ``s3://``, ``gs://``, ``abfs://`` (``abfss://``,
        ``az://``); other schemes are refused (the commit needs an exclusive create).
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
    :param column_policies: keep personal data out of the lake: ``{field: "drop" | "hash"}`` (dropped columns
        are never read; hashed ones land as the hex HMAC-SHA256 of their text, equal across objects and runs
        for one key), or ``"personal_data"`` for the catalog's suggestions. Applied while the file streams,
        recorded in the manifest and the Parquet field metadata. Default: none.
    :param hash_key_conn_id: connection whose password is the hash key (needed when a column is hashed).
    :param hash_key_variable: or the Variable holding it.
    :param delete_export: delete the export in Voucherify once the landing is committed (default True): its
        file, with every exported field, stays downloadable there until then. False keeps it.
    :param partition_schedule: land a long window (a history load) as the partitions of the DAG on this
        cron schedule (e.g. ``@daily``, that DAG's timetable): one ``window_start=`` partition per interval,
        each committed on its own as that DAG's run commits it, empty intervals included. Returns then a
        summary listing every partition (``partitions``) instead of one manifest (a window of exactly one
        interval lands as usual and returns its manifest). None: one partition.
    """

    template_fields: Sequence[str] = (
        "export_id", "destination", "destination_conn_id", "exported_object", "window_start", "window_end",
        "voucherify_conn_id", "partition_schedule", "hash_key_conn_id", "hash_key_variable",
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
        partition_schedule: str | None = None,
        column_policies: Mapping[str, str] | str | None = None,
        hash_key_conn_id: str | None = None,
        hash_key_variable: str | None = None,
        delete_export: bool = True,
        **kwargs: Any,
    ) -> None:
        if on_bad_value not in ON_BAD_VALUE:
            raise VoucherifyConfigError(f"on_bad_value must be 'fail' or 'reject', got {on_bad_value!r}.")
        if not is_templated(destination):
            check_destination(destination)  # an unsupported store fails at parse time
        if exported_object and not is_templated(exported_object):
            obj = catalog.get_object(exported_object)
            check_hash_key_source(parse_policies(obj, column_policies), hash_key_conn_id, hash_key_variable)
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
        self.partition_schedule = partition_schedule
        self.column_policies = column_policies
        self.hash_key_conn_id = hash_key_conn_id
        self.hash_key_variable = hash_key_variable
        self.delete_export = delete_export
        if delete_export:  # a landing that fails for good leaves no export behind with its data
            self.on_failure_callback = with_callback(self.on_failure_callback, self._delete_unlanded_export)
        if partition_schedule and not is_templated(partition_schedule):
            cron_schedule(partition_schedule)  # a typo fails at parse time, naming the fix

    @cached_property
    def hook(self) -> VoucherifyHook:
        """The sync hook for this task's connection."""
        from voucherify_provider.hooks.voucherify import VoucherifyHook

        return VoucherifyHook(self.voucherify_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        """Resolve the destination, the export, its window and the column policies (mistakes fail before any
        data moves), then hand the files to the landing (:mod:`voucherify_provider.landing.plan`)."""
        from voucherify_provider.landing.plan import plan_landing, resolve_policies
        from voucherify_provider.landing.typed_csv import BadExportFileError
        from voucherify_provider.landing.writer import ensure_writable

        with config_errors_fail_task():
            for bound, name in ((self.window_start, "window_start"), (self.window_end, "window_end")):
                if bound is not None:  # bad explicit bounds fail before any API call
                    as_utc(bound, name)
            base = destination_path(self.destination, self.destination_conn_id)
            if self.exported_object:  # prove the destination is writable before spending API calls
                ensure_writable(base / self.exported_object)
            export = self._done_export(base, context)
            if isinstance(export, dict):  # landed by an earlier try, which deleted the export
                return export
            obj = catalog.get_object(str(export.exported_object))
            policies = resolve_policies(obj, self.column_policies, self.hash_key_conn_id, self.hash_key_variable)
            window = (Window.for_run if export.windowed else Window.snapshot)(self.window_start, self.window_end,
                                                                               context)
            if export.windowed:
                self._check_window(export, window)
            plan = plan_landing(
                base=base, export=export, export_id=self.export_id, window=window,
                partition_schedule=self.partition_schedule, policies=policies, owner=staging_owner(context),
                row_group_rows=self.row_group_rows, log=self.log, on_bad_value=self.on_bad_value,
                max_download_attempts=self.max_download_attempts, progress_every_seconds=self.progress_every_seconds)
        try:
            outcome = plan.land(self.hook.download_export(self.export_id, export.raw))
        except (BadExportFileError, VoucherifySecurityError) as err:  # the same file or URL on every retry
            fail_task(str(err))
        self.log.info("%s", outcome.message)
        self._emit_asset_event(context, outcome.event)
        self._lineage = (obj.name, outcome.partition, outcome.lineage_manifest)
        self._delete_landed_export()
        return outcome.result

    def _delete_unlanded_export(self, context: Context) -> None:
        """Failure callback (final failures only): nobody will land this export."""
        self.hook.discard_export(self.export_id, "the landing failed for good (clear the run to export again)")

    def _delete_landed_export(self) -> None:
        """The landing is committed: its export (every exported field, downloadable) goes from Voucherify. A
        failure here leaves the landing as it is (it is whole)."""
        if self.delete_export:
            self.hook.discard_export(self.export_id, "landed (delete_export=False keeps exports)")

    def _done_export(self, base: ObjectStoragePath, context: Context) -> ExportDescription | dict[str, Any]:
        """The export, which must be DONE and of this task's object; or, when an earlier try of this task
        landed it and deleted it (then died before it could report success), what that try landed."""
        try:
            export = ExportDescription(self.hook.get_export(self.export_id))
        except VoucherifyNotFoundError as err:
            from voucherify_provider.landing.export_landing import landed_before

            earlier = landed_before(base, self.exported_object, self.export_id, self.window_start, self.window_end,
                                    self.partition_schedule, context)
            if earlier is not None:
                self._check_landed_under(earlier)
                self.log.info("Export %s was landed (and deleted) by an earlier try: %s", self.export_id,
                              earlier.get("partition") or earlier.get("window_start"))
                return earlier
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

    def _check_landed_under(self, earlier: dict[str, Any]) -> None:
        """What an earlier try landed counts only under this task's column policies (and key)."""
        from voucherify_provider.landing.column_policies import landed_under
        from voucherify_provider.landing.plan import resolve_policies

        assert self.exported_object
        wanted = resolve_policies(catalog.get_object(self.exported_object), self.column_policies,
                                  self.hash_key_conn_id, self.hash_key_variable)
        if landed_under(earlier) != wanted.manifest():
            fail_task(f"Export {self.export_id} was landed, then deleted, by an earlier try under other column "
                      "policies or another hash key; clear the create task to export and land it again.")

    def _check_window(self, export: ExportDescription, window: Window) -> None:
        """A windowed export must be this task's window."""
        after, before = export.created_at_bounds()
        expected = window.api_filter()["conditions"]
        if (after, before) != (expected["$after"][0], expected["$before"][0]):
            fail_task(
                f"Export {self.export_id} covers created_at after {after} and before {before}, which is not this "
                f"task's window [{window.start.isoformat()}, {window.end.isoformat()}); landing it would mix windows."
            )

    def _emit_asset_event(self, context: Context, extra: dict[str, Any]) -> None:
        outlet_events = context.get("outlet_events")
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset) and outlet_events is not None:
                outlet_events[outlet].extra = extra

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the export as input, the object's folder under the destination as output (see
        :func:`voucherify_provider.lineage.landing_lineage`)."""
        lineage = getattr(self, "_lineage", None)
        if lineage is None:
            return no_lineage()
        obj, partition, manifest = lineage
        return landing_lineage(self.hook.settings.base_url, obj, partition, manifest)
