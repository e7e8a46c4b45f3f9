"""VoucherifyDownloadToWarehouseOperator: stream a DONE export into typed Parquet, atomically."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from voucherify_provider import DEFAULT_CONN_ID, __version__, catalog
from voucherify_provider.errors import (
    VoucherifyConfigError,
    VoucherifyDownloadError,
    VoucherifyNotFoundError,
    explain_missing_connection,
)
from voucherify_provider.landing.paths import is_local, path_url
from voucherify_provider.operators._common import airflow_exception, fail_task, is_templated
from voucherify_provider.window import Window, as_utc

if TYPE_CHECKING:
    from airflow.sdk import Context

    from voucherify_provider.hooks.voucherify import ExportPart, VoucherifyHook
    from voucherify_provider.landing.typed_csv import ParseStats, RejectedRows
    from voucherify_provider.landing.writer import PartitionWriter


def destination_path(destination: str | ObjectStoragePath, conn_id: str | None) -> ObjectStoragePath:
    """The destination base as an ObjectStoragePath (local path, file://, s3://, any fsspec scheme).

    A destination connection that does not exist is an error here: the filesystem would otherwise fall
    back silently to whatever default credentials the worker has.
    """
    if isinstance(destination, ObjectStoragePath):
        return destination
    if not str(destination).strip():
        raise VoucherifyConfigError("destination is empty; give a local path or a URL such as s3://bucket/prefix.")
    if conn_id:
        from airflow.sdk import BaseHook

        with explain_missing_connection(
                f"destination_conn_id {conn_id!r} is not defined. Create it (Admin > Connections, or "
                f"AIRFLOW_CONN_{conn_id.upper()}), or leave destination_conn_id unset to use the worker's "
                "default credentials."):
            BaseHook.get_connection(conn_id)
    if not conn_id and _is_local(str(destination)):
        _attach_local_filesystem()
    try:
        return ObjectStoragePath(str(destination), conn_id=conn_id)
    except ValueError as err:
        raise VoucherifyConfigError(
            f"destination {str(destination)!r}: {err}. Use a local path or a URL whose filesystem is installed "
            "(file://, s3:// with apache-airflow-providers-amazon[s3fs], gs://, abfs://...).") from None


def _is_local(destination: str) -> bool:
    return "://" not in destination or destination.startswith("file://")


def _attach_local_filesystem() -> None:
    """Give local paths their filesystem directly: resolving it through Airflow's registry first imports
    every provider's filesystem module (boto3 and more: ~0.15-0.3 s of each landing task)."""
    try:
        from airflow.sdk.io.store import attach
    except ImportError:  # pragma: no cover - older task SDKs resolve it the slow way
        return
    from fsspec.implementations.local import LocalFileSystem

    attach("file", fs=LocalFileSystem())


def asset_for(destination: str, exported_object: str) -> Asset:
    """The Asset a landing task emits: the object's folder under the destination."""
    base = str(destination).rstrip("/")
    if "://" not in base:
        base = f"file://{base if base.startswith('/') else '/' + base}"
    return Asset(uri=f"{base}/{exported_object}")


class _Progress:
    """Logs bytes, rows and rate every ``every`` seconds of a long download."""

    def __init__(self, log: Any, label: str, every: float) -> None:
        self.log, self.label, self.every = log, label, every
        self.started = self.last = time.monotonic()
        self.bytes = 0

    def add_bytes(self, size: int) -> None:
        self.bytes += size
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.bytes / max(now - self.started, 1e-9) / 1e6
            self.log.info("%s: %.1f MB downloaded (%.1f MB/s)", self.label, self.bytes / 1e6, rate)


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
    :param on_bad_value: ``fail`` (default) or ``reject``: set unparseable rows aside in
        ``rejected-<export_id>.csv`` beside the data.
    :param max_download_attempts: tries per file when a download breaks off.
    :param row_group_rows: rows per Parquet row group (default 64,000); the buffered row group is most
        of the task's memory.
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
        if on_bad_value not in ("fail", "reject"):
            raise ValueError(f"on_bad_value must be 'fail' or 'reject', got {on_bad_value!r}.")
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

    def _window(self, context: Context, windowed: bool) -> Window:
        """The window a windowed export must match, or the snapshot's partition (no window needed)."""
        try:
            if windowed:
                return Window.for_run(self.window_start, self.window_end, context)
            return Window.snapshot(self.window_start, self.window_end, context)
        except VoucherifyConfigError as err:
            fail_task(str(err))

    def execute(self, context: Context) -> dict[str, Any]:
        """Download, type, write and commit; return the manifest."""
        from voucherify_provider.landing.typed_csv import arrow_schema
        from voucherify_provider.landing.writer import ROW_GROUP_ROWS, PartitionWriter, ensure_writable

        for bound, name in ((self.window_start, "window_start"), (self.window_end, "window_end")):
            if bound is not None:  # bad explicit bounds fail before any API call
                self._window_bound(bound, name)
        try:
            base = destination_path(self.destination, self.destination_conn_id)
        except VoucherifyConfigError as err:
            fail_task(str(err))
        if self.exported_object:  # prove the destination is writable before spending API calls
            ensure_writable(base / self.exported_object)
        try:
            export = self.hook.get_export(self.export_id)
        except VoucherifyNotFoundError as err:
            fail_task(f"Export {self.export_id} does not exist (deleted, expired, or created with another "
                      f"connection); clear the create task to export again. ({err})")
        obj = self._object_of(export)
        fields = list((export.get("parameters") or {}).get("fields") or obj.default_fields)
        windowed = _is_windowed(export)
        window = self._window(context, windowed)
        if windowed:
            self._check_window(export, window)
        metadata = {"voucherify.export_id": self.export_id, "voucherify.object": obj.name,
                    "voucherify.window_start": window.start.isoformat(),
                    "voucherify.window_end": window.end.isoformat()}
        writer = PartitionWriter(base / obj.name / window.partition, arrow_schema(obj, fields), metadata=metadata,
                                 row_group_rows=self.row_group_rows or ROW_GROUP_ROWS, owner=staging_owner(context))
        ensure_writable(writer.partition)
        if swept := writer.sweep_staged():
            self.log.info("Removed %d file(s) an earlier try of this task left staged", swept)
        try:
            manifest = self._land(export, obj, fields, window, windowed, writer)
        except BaseException:
            writer.abort()
            raise
        self.log.info("Landed %s rows of %s in %s (%d file(s))", manifest["rows"], obj.name, writer.partition,
                      len(manifest["files"]))
        self._emit_asset_event(context, obj.name, writer.partition, manifest)
        self._lineage = (obj.name, writer.partition, manifest)
        return {**manifest, "partition": path_url(writer.partition)}  # where it landed, for downstream tasks

    def _object_of(self, export: dict[str, Any]) -> catalog.ExportedObject:
        status = export.get("status")
        if status != "DONE":
            raise airflow_exception("AirflowException")(
                f"Export {self.export_id} is {status}, not DONE; wait for it first "
                "(VoucherifyExportDoneSensor or wait_for_completion=True)."
            )
        name = export.get("exported_object")
        if self.exported_object and name != self.exported_object:
            fail_task(
                f"Export {self.export_id} exports {name!r}, but this task lands {self.exported_object!r}."
            )
        return catalog.get_object(str(name))

    def _window_bound(self, value: datetime | str, name: str) -> None:
        try:
            as_utc(value, name)
        except VoucherifyConfigError as err:
            fail_task(str(err))

    def _check_window(self, export: dict[str, Any], window: Window) -> None:
        """A windowed export must be this task's window."""
        conditions = _created_at_conditions(export)
        expected = window.api_filter()["conditions"]
        after, before = (conditions.get("$after") or [None])[0], (conditions.get("$before") or [None])[0]
        if (after, before) != (expected["$after"][0], expected["$before"][0]):
            fail_task(
                f"Export {self.export_id} covers created_at after {after} and before {before}, which is not this "
                f"task's window [{window.start.isoformat()}, {window.end.isoformat()}); landing it would mix windows."
            )

    def _land(self, export: dict[str, Any], obj: catalog.ExportedObject, fields: list[str], window: Window,
              windowed: bool, writer: PartitionWriter) -> dict[str, Any]:
        from voucherify_provider.landing.typed_csv import ParseStats, RejectedRows

        rejected = RejectedRows(fields) if self.on_bad_value == "reject" else None
        totals = ParseStats()
        # Change windows place a record by its last change; created_at windows by its creation.
        changes = windowed and _is_change_window(export, obj)
        place_by = [obj.updated_field or "", obj.created_field or ""] if changes else None
        mode = "changes" if changes else "window" if windowed else "snapshot"
        parts = self.hook.download_export(self.export_id, export)
        progress = _Progress(self.log, f"Export {self.export_id}", self.progress_every_seconds)
        for part in parts:
            suffix = f"-{part.index:04d}" if part.count > 1 else ""
            name = f"part-{self.export_id}-{run_token()}{suffix}.parquet"
            self._land_part(part, name, obj, fields, window if windowed else None, place_by, writer, rejected,
                            totals, progress)
        if rejected is not None and rejected.rows:
            writer.write_side_file(f"rejected-{self.export_id}.csv", _rejected_csv(rejected))
            self.log.warning("%d row(s) could not be typed; see rejected-%s.csv", len(rejected.rows), self.export_id)
        schema = [{"name": f.name, "type": str(f.type), "voucherify_type": f.metadata[b"voucherify_type"].decode()}
                  for f in writer.schema]
        return writer.commit({
            "export_id": self.export_id, "exported_object": obj.name, "mode": mode,
            "placed_by": place_by or ([obj.created_field] if windowed else []),
            "window_start": window.start.isoformat(), "window_end": window.end.isoformat(),
            "fields": fields, "schema": schema, "rows_outside_window": totals.outside_window,
            "rows_rejected": totals.rejected, "bytes_downloaded": progress.bytes,
            "written_at": datetime.now(timezone.utc).isoformat(), "provider_version": __version__,
        })

    def _land_part(self, part: ExportPart, name: str, obj: catalog.ExportedObject, fields: list[str],
                   window: Window | None, place_by: list[str] | None, writer: PartitionWriter,
                   rejected: RejectedRows | None,
                   totals: ParseStats, progress: _Progress) -> None:
        from voucherify_provider.landing.stream import IterStream
        from voucherify_provider.landing.typed_csv import BadExportFileError, NeedsDiagnosis, TypedCsvReader

        attempt, diagnose = 1, False
        while True:
            part_writer = writer.part(name)
            reader = TypedCsvReader(obj, fields, window=window, place_by=place_by, rejected=rejected, diagnose=diagnose,
                                    label=f"Export {self.export_id} file {part.index + 1}/{part.count}")
            try:
                for batch in reader.batches(IterStream(part.iter_bytes(), progress.add_bytes)):
                    part_writer.write(batch)
                writer.add(part_writer.close())
            except NeedsDiagnosis as err:
                part_writer.abort()
                self.log.warning("%s; reading the file again to find the row", err)
                diagnose = True
                continue
            except VoucherifyDownloadError as err:
                part_writer.abort()
                if attempt == self.max_download_attempts:
                    raise
                attempt += 1
                self.log.warning("%s; attempt %d of %d, downloading again", err, attempt,
                                 self.max_download_attempts)
                continue
            except BadExportFileError as err:
                part_writer.abort()
                fail_task(str(err))
            except BaseException:
                part_writer.abort()
                raise
            for key in ("rows", "outside_window", "rejected"):
                setattr(totals, key, getattr(totals, key) + getattr(reader.stats, key))
            return

    def _emit_asset_event(self, context: Context, obj: str, partition: ObjectStoragePath,
                          manifest: dict[str, Any]) -> None:
        outlet_events = context.get("outlet_events")
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset) and outlet_events is not None:
                outlet_events[outlet].extra = {"partition": str(partition), "rows": manifest["rows"],
                                               "export_id": self.export_id, "object": obj}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the Voucherify object's export as input; as output the object's folder under the
        destination (the dataset every window lands in, like the Asset), with its schema and this run's
        row and byte counts."""
        try:
            from airflow.providers.common.compat.openlineage.facet import (
                Dataset,
                OutputDataset,
                OutputStatisticsOutputDatasetFacet,
                SchemaDatasetFacet,
                SchemaDatasetFacetFields,
            )
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        lineage = getattr(self, "_lineage", None)
        if lineage is None:
            return OperatorLineage()
        obj, partition, manifest = lineage
        namespace, name = lineage_dataset_name(partition.parent)
        schema = SchemaDatasetFacet(fields=[SchemaDatasetFacetFields(name=c["name"], type=c["type"])
                                            for c in manifest["schema"]])
        statistics = OutputStatisticsOutputDatasetFacet(rowCount=manifest["rows"],
                                                        size=sum(f["bytes"] for f in manifest["files"]))
        return OperatorLineage(
            inputs=[Dataset(namespace=self.hook.settings.base_url, name=f"export/{obj}")],
            outputs=[OutputDataset(namespace=namespace, name=name, facets={"schema": schema},
                                   outputFacets={"outputStatistics": statistics})],
        )


def lineage_dataset_name(path: ObjectStoragePath) -> tuple[str, str]:
    """OpenLineage (namespace, name) of a path: ``file`` + absolute path locally, ``s3://bucket`` + key on
    object stores (the OpenLineage naming convention)."""
    if is_local(path):
        return "file", path_url(path)
    return str(path.namespace), str(path.key)


def _created_at_conditions(export: dict[str, Any]) -> dict[str, Any]:
    filters = (export.get("parameters") or {}).get("filters") or {}
    return dict((filters.get("created_at") or {}).get("conditions") or {})


def _is_change_window(export: dict[str, Any], obj: catalog.ExportedObject) -> bool:
    """An export of the records created or updated in a window (``incremental=True``)."""
    filters = (export.get("parameters") or {}).get("filters") or {}
    return bool(obj.updated_field) and filters.get("junction") == "or" and obj.updated_field in filters


def _is_windowed(export: dict[str, Any]) -> bool:
    """An export filtered on created_at is a window; any other is a snapshot."""
    return bool(_created_at_conditions(export))


def staging_owner(context: Context) -> str | None:
    """Same for every try of one task instance (so a retry finds a killed try's staged files), different
    for any other run; None outside a task run."""
    ti = context.get("ti")
    if ti is None:
        return None
    identity = f"{ti.dag_id}\x00{ti.run_id}\x00{ti.task_id}\x00{getattr(ti, 'map_index', -1)}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def run_token() -> str:
    """A short random token that keeps this run's file names apart from an earlier run of the same export."""
    return uuid.uuid4().hex[:8]


def _rejected_csv(rejected: RejectedRows) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*rejected.fields, "_error"])
    for row, reason in zip(rejected.rows, rejected.reasons, strict=True):
        writer.writerow([*("" if v is None else v for v in row), reason])
    return buffer.getvalue().encode("utf-8")
