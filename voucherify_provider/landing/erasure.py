"""Erasure requests reaching the lake: given ids leave every landed partition of an object, rewritten
atomically, and an audit record says what went (ids hashed, never in clear).

A partition holding a requested id is rewritten exactly as a landing commits one (``PartitionWriter``:
files staged, the commit lock, the manifest last, the old files removed), so readers see it before or after,
never half-way; its manifest keeps what it said and gains an ``erasures`` entry. Partitions without a match
are read for the match column only and left untouched. The rejected-rows side files are filtered too.

Imports pyarrow: the erasure operator imports this inside ``execute``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from voucherify_provider.catalog import ExportedObject
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.column_policies import hmac_hex
from voucherify_provider.landing.delta_files import row_group_batches
from voucherify_provider.landing.sink import forget_listing, open_input, open_untracked
from voucherify_provider.landing.typed_csv import string_array
from voucherify_provider.landing.writer import PartitionChanged, PartitionWriter, read_manifest
from voucherify_provider.privacy import REMOVE, key_id

log = logging.getLogger(__name__)
ATTEMPTS = 5  # rewrites of one partition when landings keep committing it meanwhile


def personal_columns(obj: ExportedObject, names: Sequence[str]) -> list[str]:
    """The columns a redaction nulls: the catalog's personal fields, metadata, and the customer reference
    (never the key or the time fields: the record stays a record)."""
    return [name for name in names
            if (obj.is_personal(name) or name == obj.customer_field) and name not in obj.placing_fields]


@dataclass(frozen=True)
class Erasure:
    """What to erase: rows of ``obj`` whose ``match_field`` is one of ``ids``; ``remove`` them, or
    ``redact`` them (null their :func:`personal_columns`, keep the rest: an order stays an order without its
    customer). With the column-policy ``key``, a column landed hashed matches too: the ids' hashes join the
    value set."""

    obj: ExportedObject
    match_field: str
    ids: Sequence[str]
    action: str
    key: bytes | None = None

    @property
    def id_array(self) -> pa.Array:
        """The ids (and, with a key, their hashes) as an Arrow value set."""
        hashed = [hmac_hex(self.key, i) for i in self.ids] if self.key is not None else []
        return string_array([*self.ids, *hashed])

    def matches(self, column: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Which values of a column are requested ids (nulls never are)."""
        return pc.fill_null(pc.is_in(column, value_set=self.id_array), False)

    def apply(self, batch: pa.RecordBatch, mask: pa.Array) -> pa.RecordBatch:
        """A batch with the matching rows removed or redacted."""
        if self.action == REMOVE:
            return batch.filter(pc.invert(mask))
        redact = personal_columns(self.obj, batch.schema.names)
        columns = [pc.if_else(mask, pa.nulls(batch.num_rows, column.type), column) if name in redact else column
                   for name, column in zip(batch.schema.names, batch.columns, strict=True)]
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def erase_in_partitions(folder: ObjectStoragePath, erasure: Erasure, owner: str) -> list[dict[str, Any]]:
    """Erase from every committed partition under ``folder`` (an object's folder); one entry per partition
    changed: its name and the rows erased. Memory: one row group (and one file's match column)."""
    changed = []
    for partition in _partitions(folder):
        for attempt in range(1, ATTEMPTS + 1):
            manifest = read_manifest(partition)
            if manifest is None:
                break
            files = [partition / f["path"] for f in manifest["files"]]
            try:
                if not any(_hits(file, erasure) for file in files) and not _side_hits(partition, manifest, erasure):
                    break
                rows = _rewrite(partition, manifest, files, erasure, owner)
            except (PartitionChanged, FileNotFoundError):  # a landing committed it meanwhile: erase from that
                if attempt == ATTEMPTS:
                    raise
                continue
            changed.append({"partition": partition.name, "rows": rows})
            log.info("Erased %d row(s) in %s (%s)", rows, partition, erasure.action)
            break
    return changed


def _partitions(folder: ObjectStoragePath) -> Iterator[ObjectStoragePath]:
    forget_listing(folder)
    try:
        children = sorted(folder.iterdir(), key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for child in children:
        if "=" in child.name and not child.name.startswith("."):
            yield child


def _hits(file: ObjectStoragePath, erasure: Erasure) -> int:
    with open_input(file) as handle:
        parquet = pq.ParquetFile(handle)
        if erasure.match_field not in parquet.schema_arrow.names:
            return 0
        metadata = parquet.schema_arrow.field(erasure.match_field).metadata or {}
        if metadata.get(b"voucherify_policy") == b"hash" and erasure.key is None:
            raise VoucherifyConfigError(
                f"{file.parent.name}: {erasure.match_field} was landed hashed, so raw ids cannot match it: pass "
                "the column-policy key (hash_key_conn_id or hash_key_variable) to erase by its hash.")
        column = parquet.read(columns=[erasure.match_field]).column(0)
    return int(pc.sum(pc.cast(erasure.matches(column), pa.int64())).as_py() or 0)


def _side_hits(partition: ObjectStoragePath, manifest: dict[str, Any], erasure: Erasure) -> bool:
    return any(_filtered_csv(partition / side["path"], erasure)[1] for side in manifest.get("side_files", []))


def _filtered_csv(path: ObjectStoragePath, erasure: Erasure) -> tuple[bytes, int]:
    """A rejected-rows file without (or with redacted) matching rows, and how many matched."""
    with open_untracked(path, "rb") as handle:
        rows = list(csv.reader(io.StringIO(handle.read().decode("utf-8"))))
    if not rows or erasure.match_field not in rows[0]:
        return b"", 0
    header, index = rows[0], rows[0].index(erasure.match_field)
    wanted, kept, hits = set(erasure.id_array.to_pylist()), [rows[0]], 0
    blank = [i for i, name in enumerate(header) if name in personal_columns(erasure.obj, header)]
    for row in rows[1:]:
        if index < len(row) and row[index] in wanted:
            hits += 1
            if erasure.action == REMOVE:
                continue
            row = [("" if i in blank else value) for i, value in enumerate(row)]
        kept.append(row)
    buffer = io.StringIO()
    csv.writer(buffer).writerows(kept)
    return buffer.getvalue().encode("utf-8"), hits


def _rewrite(partition: ObjectStoragePath, manifest: dict[str, Any], files: list[ObjectStoragePath],
             erasure: Erasure, owner: str) -> int:
    """The partition again without the erased rows, committed whole; returns the rows erased."""
    schema = _schema(files[0]) if files else pa.schema([])
    writer = PartitionWriter(partition, schema, metadata={}, owner=owner, distinct=erasure.obj.distinct_fields)
    token, erased = uuid.uuid4().hex[:8], 0
    try:
        for index, file in enumerate(files):
            part = writer.part(f"part-{manifest.get('export_id', 'erased')}-{token}-{index:04d}.parquet")
            try:
                with open_input(file) as handle:
                    for batch in row_group_batches(handle):
                        mask = erasure.matches(batch.column(erasure.match_field))
                        erased += int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)
                        part.write(erasure.apply(batch, mask))
                writer.add(part.close())
            except BaseException:
                part.abort()
                raise
        for side in manifest.get("side_files", []):
            data, hits = _filtered_csv(partition / side["path"], erasure)
            erased += hits
            # A new name: an aborted rewrite removes what it staged, never the file the manifest still lists.
            stem = side["path"].removesuffix(".csv").split("-erased-")[0]
            writer.write_side_file(f"{stem}-erased-{token}.csv", data)
        kept = {k: v for k, v in manifest.items() if k not in ("rows", "files", "side_files")}
        entry = {"erased_at": datetime.now(timezone.utc).isoformat(), "rows": erased, "action": erasure.action,
                 "match_field": erasure.match_field}
        writer.commit({**kept, "erasures": [*manifest.get("erasures", []), entry]}, replaces=manifest)
    except BaseException:
        writer.abort()
        raise
    return erased


def _schema(file: ObjectStoragePath) -> pa.Schema:
    with open_input(file) as handle:
        return pq.ParquetFile(handle).schema_arrow


def hashed_ids(ids: Sequence[str], key: bytes | None) -> dict[str, Any]:
    """The audit record's view of the ids: keyed hashes when a hash key is set (the same as hashed columns),
    else SHA-256; never the ids themselves."""
    if key is not None:
        return {"algorithm": "HMAC-SHA256", "key_id": key_id(key), "ids": sorted(hmac_hex(key, i) for i in ids)}
    return {"algorithm": "SHA-256", "ids": sorted(hashlib.sha256(i.encode("utf-8")).hexdigest() for i in ids)}


def write_audit_record(base: ObjectStoragePath, obj: str, record: dict[str, Any]) -> ObjectStoragePath:
    """``<base>/_erasure/<object>/<UTC stamp>-<random>.json``: what an erasure did, for the audit trail."""
    folder = base / "_erasure" / obj
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.json"
    with open_untracked(path, "wb") as handle:
        handle.write(json.dumps(record, indent=2, sort_keys=True).encode())
    return path
