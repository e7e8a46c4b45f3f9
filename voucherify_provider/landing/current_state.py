"""The current-state table of a mutable object: the latest version of every record, as a Delta Lake table.

Each run merges the change partitions it landed (``<destination>/<object>/window_start=...``) into
``<destination>/current/<object>`` by the object's key: a row replaces the stored one only when its last
change (``_change_at`` = updated_at, else created_at) is newer, so merging a window again changes nothing
and windows may be merged in any order. A periodic full list of ids marks the records missing from it
(deleted in Voucherify) with ``_deleted``/``_deleted_at``; they stay in the table for history.

Why Delta Lake (measured, see README): its merge runs in Rust with a conditional update, an insert and a
"not matched by source" update in one pass, ~5x faster than pyiceberg's upsert at 1M and 5M records,
and the table is self-describing in its folder (no catalog service to run). Merges of one table are
serialised by the same exclusive lock file as partition commits, so two runs never race a commit,
on local disks and on S3 alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from airflow.sdk import ObjectStoragePath

from voucherify_provider.catalog import ExportedObject
from voucherify_provider.hooks._endpoints import iso_utc
from voucherify_provider.landing.paths import is_local, path_url
from voucherify_provider.landing.sink import forget_listing, open_untracked, s3_settings
from voucherify_provider.landing.writer import MANIFEST, CommitLock

log = logging.getLogger(__name__)
CHANGE_AT, DELETED, DELETED_AT, EXPORT_ID = "_change_at", "_deleted", "_deleted_at", "_export_id"
TIME = pa.timestamp("ms", tz="UTC")
LOCK_TIMEOUT = 1800.0


def table_path(base: ObjectStoragePath, obj: ExportedObject) -> ObjectStoragePath:
    """Where an object's current-state table lives under the destination base."""
    return base / "current" / obj.name


def state_schema(landed: pa.Schema) -> pa.Schema:
    """The table's columns: the landed ones plus the bookkeeping columns."""
    base = pa.schema([f.remove_metadata() for f in landed]).remove_metadata()
    return base.append(pa.field(CHANGE_AT, TIME)).append(pa.field(DELETED, pa.bool_())).append(
        pa.field(DELETED_AT, TIME)).append(pa.field(EXPORT_ID, pa.string()))


def merge_partition(table: ObjectStoragePath, obj: ExportedObject, partition: ObjectStoragePath,
                    owner: str) -> dict[str, int]:
    """Merge one landed change partition (its manifest's files) into the table; returns Delta's counts."""
    manifest = _manifest(partition)
    files = [partition / f["path"] for f in manifest["files"]]
    if not files:
        return {"num_source_rows": 0}
    return merge_rows(table, obj, _stamped(obj, files, str(manifest.get("export_id", ""))), owner)


def merge_rows(table: ObjectStoragePath, obj: ExportedObject, rows: pa.RecordBatchReader, owner: str) -> dict[str, int]:
    """Merge rows carrying the bookkeeping columns (see :func:`state_schema`): newer versions replace
    stored ones, unknown keys are inserted, equal or older versions change nothing."""
    return _merge(table, obj, rows, owner, lambda m: m.when_matched_update_all(
        predicate=f"s.{CHANGE_AT} > t.{CHANGE_AT}").when_not_matched_insert_all(), evolve=True)


def mark_deleted(table: ObjectStoragePath, obj: ExportedObject, snapshot: ObjectStoragePath, cutoff: datetime,
                 owner: str) -> dict[str, int]:
    """Mark deleted every live record the full id list in ``snapshot`` (a landed partition) lacks, among
    those changed before ``cutoff`` (records changed later may be newer than the list)."""
    manifest = _manifest(snapshot)
    if obj.key_field not in manifest["fields"]:
        raise ValueError(f"The snapshot in {snapshot} lacks the key field {obj.key_field!r}; export it.")
    if not _exists(table):  # nothing merged yet, nothing to mark
        return {"num_target_rows_updated": 0}
    files = [snapshot / f["path"] for f in manifest["files"]]
    ids = _dataset(files).scanner(columns=[obj.key_field]).to_reader()
    stamp = f"TIMESTAMP '{iso_utc(cutoff)}'"
    return _merge(table, obj, ids, owner, lambda m: m.when_not_matched_by_source_update(
        updates={DELETED: "true", DELETED_AT: stamp},
        predicate=f"t.{DELETED} = false AND t.{CHANGE_AT} < {stamp}"))


def vacuum(table: ObjectStoragePath, retention_hours: int, owner: str) -> int:
    """Delete the data files no table version younger than ``retention_hours`` uses (every merge rewrites
    the files it touches; without this the old ones stay forever). Returns how many were deleted."""
    if not _exists(table):
        return 0
    with _locked(table, owner) as delta:
        deleted = delta.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
    log.info("Vacuumed %s: %d file(s) older than %dh deleted", table, len(deleted), retention_hours)
    return len(deleted)


@contextmanager
def _locked(table: ObjectStoragePath, owner: str, create: pa.Schema | None = None) -> Iterator[Any]:
    """The Delta table under the commit lock; created with ``create`` as its schema when missing."""
    from deltalake import DeltaTable

    uri, options = delta_location(table)
    table.mkdir(parents=True, exist_ok=True)
    with CommitLock(table, owner, LOCK_TIMEOUT):
        if create is not None and not _exists(table):  # checked again under the lock
            DeltaTable.create(uri, schema=create, storage_options=options, mode="ignore")
        yield DeltaTable(uri, storage_options=options)


def _merge(table: ObjectStoragePath, obj: ExportedObject, source: pa.RecordBatchReader, owner: str,
           clauses: Any, evolve: bool = False) -> dict[str, int]:
    key = obj.key_field
    # The first merge of changes creates the table; marking deletions never does (it checks first).
    with _locked(table, owner, create=source.schema if evolve else None) as delta:
        # evolve: fields added to the export later become new columns (null in older rows).
        merger = delta.merge(source=source, predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t",
                             streamed_exec=True, merge_schema=evolve)
        metrics = clauses(merger).execute()
    counts = {k: int(v) for k, v in metrics.items() if k.startswith("num_") and isinstance(v, int)}
    log.info("Merged into %s: %s", table, ", ".join(f"{k[4:]}={v}" for k, v in counts.items() if v))
    return counts


def _stamped(obj: ExportedObject, files: Sequence[ObjectStoragePath], export_id: str) -> pa.RecordBatchReader:
    """The partition's rows with the bookkeeping columns, streamed batch by batch."""
    scanner = _dataset(files).scanner()
    schema = state_schema(scanner.projected_schema)
    updated, created = obj.updated_field or "", obj.created_field or ""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in scanner.to_batches():
            change = pc.coalesce(batch.column(updated), batch.column(created))
            n = batch.num_rows
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, change, pa.nulls(n, pa.bool_()).fill_null(False), pa.nulls(n, TIME),
                 pa.nulls(n, pa.string()).fill_null(export_id)], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _dataset(files: Sequence[ObjectStoragePath]) -> Any:
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    filesystem = PyFileSystem(FSSpecHandler(files[0].fs)) if files else None
    return ds.dataset([str(f.path) for f in files], format="parquet", filesystem=filesystem)


def _manifest(partition: ObjectStoragePath) -> dict[str, Any]:
    try:
        with open_untracked(partition / MANIFEST, "rb") as handle:
            return dict(json.loads(handle.read()))
    except FileNotFoundError:
        raise FileNotFoundError(f"{partition} has no {MANIFEST}: it was never landed (or not committed).") from None


def _exists(table: ObjectStoragePath) -> bool:
    forget_listing(table)  # delta-rs writes natively: fsspec's cached listing never sees its log
    return (table / "_delta_log").exists()


def delta_location(table: ObjectStoragePath) -> tuple[str, dict[str, str]]:
    """The table's URI and delta-rs storage options (credentials and endpoint of the destination's s3fs)."""
    if is_local(table):
        return path_url(table), {}
    if table.protocol not in ("s3", "s3a"):
        raise ValueError(f"The current-state table supports local and s3:// destinations, not {table.protocol}://.")
    settings = s3_settings(table.fs)
    if settings is None:
        raise ValueError("The destination's S3 connection uses settings delta-rs cannot carry (anonymous access, "
                         "a custom signer or a proxy); give it key/secret credentials.")
    options = {"AWS_ACCESS_KEY_ID": settings["key"], "AWS_SECRET_ACCESS_KEY": settings["secret"],
               "AWS_REGION": settings["region"],
               # Merges are serialised by this module's lock file (a conditional put), so delta-rs need not
               # bring its own locking service.
               "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    if settings["token"]:
        options["AWS_SESSION_TOKEN"] = settings["token"]
    if settings["endpoint"]:
        options["AWS_ENDPOINT_URL"] = str(settings["endpoint"])
        options["AWS_ALLOW_HTTP"] = "true" if str(settings["endpoint"]).startswith("http://") else "false"
    return path_url(table), options
