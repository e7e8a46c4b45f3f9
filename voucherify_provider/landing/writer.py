"""The one Parquet writer: typed batches into a partition, committed by a manifest written last.

Protocol, for local disks and object stores alike:

1. each data file is written under a hidden temporary name (``.tmp-...``, which pyarrow.dataset, Spark
   and a ``*.parquet`` glob all skip) and renamed into place only when complete, so no reader ever sees
   a half-written file;
2. ``_manifest.json`` is written last (same temp-then-rename) and lists the files of this run with their
   rows, bytes and sha256: readers that trust the manifest see the old window or the new one, whole;
3. files of earlier runs that the new manifest does not list are then removed, so re-running a window
   leaves no duplicates or leftovers. On failure, this run's temporary and new files are removed and the
   previous manifest stays in force.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

MANIFEST = "_manifest.json"
TMP_PREFIX = ".tmp-"
ROW_GROUP_ROWS = 256_000


@dataclass(frozen=True)
class FileEntry:
    """One committed file, as the manifest lists it."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        """The manifest's view of the file."""
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


class _HashingSink(io.RawIOBase):
    """Write-through wrapper counting bytes and hashing them, so files are not read back to checksum."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += len(view)
        self._target.write(view)
        return len(view)


class PartWriter:
    """Writes one Parquet file from batches, buffering them into row groups of about 256k rows."""

    def __init__(self, partition: ObjectStoragePath, name: str, schema: pa.Schema,
                 metadata: dict[str, str], row_group_rows: int) -> None:
        self.final = partition / name
        self.temp = partition / f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}"
        self._handle = self.temp.open("wb")
        self._sink = _HashingSink(self._handle)
        extra = {k.encode(): v.encode() for k, v in metadata.items()}
        schema = schema.with_metadata({**(schema.metadata or {}), **extra})
        self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), schema, compression="zstd",
                                        write_statistics=True)
        self._schema = schema
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._row_group_rows = row_group_rows
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Add rows; a row group is written once enough are buffered (memory stays bounded)."""
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        if self._buffered >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buffered:
            table = pa.Table.from_batches(self._buffer, schema=self._schema)
            self._writer.write_table(table, row_group_size=self._row_group_rows)
            self.rows += table.num_rows
        self._buffer, self._buffered = [], 0

    def close(self) -> FileEntry:
        """Finish the file (an empty one still carries the full schema) and move it into place."""
        self._flush()
        self._writer.close()
        self._handle.close()
        self.temp.rename(self.final)
        return FileEntry(self.final.name, self.rows, self._sink.size, self._sink.sha256.hexdigest())

    def abort(self) -> None:
        """Drop the temporary file."""
        try:
            self._writer.close()
        except Exception:
            pass
        self._handle.close()
        if self.temp.exists():
            self.temp.unlink()


def ensure_writable(partition: ObjectStoragePath) -> None:
    """Create a partition folder and prove we can write there (before any API call is spent)."""
    try:
        partition.mkdir(parents=True, exist_ok=True)
        probe = partition / f"{TMP_PREFIX}probe-{uuid.uuid4().hex}"
        with probe.open("wb") as handle:
            handle.write(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"Cannot write to destination {partition}: {err.strerror or err}. Check the path and the "
            "destination connection's permissions."
        ) from None


class PartitionWriter:
    """Lands the files of one export into one partition, atomically replacing the previous run's."""

    def __init__(self, partition: ObjectStoragePath, schema: pa.Schema, *, metadata: dict[str, str],
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.partition = partition
        self.schema = schema
        self.metadata = metadata
        self.row_group_rows = row_group_rows
        self.entries: list[FileEntry] = []
        self.extra_files: list[FileEntry] = []

    def part(self, name: str) -> PartWriter:
        """A writer for one data file of this run."""
        return PartWriter(self.partition, name, self.schema, self.metadata, self.row_group_rows)

    def add(self, entry: FileEntry) -> None:
        """Record a completed data file."""
        self.entries.append(entry)

    def write_side_file(self, name: str, data: bytes) -> FileEntry:
        """Write a non-Parquet file of this run (e.g. rejected rows), temp-then-rename."""
        final, temp = self.partition / name, self.partition / f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}"
        with temp.open("wb") as handle:
            handle.write(data)
        temp.rename(final)
        entry = FileEntry(name, -1, len(data), hashlib.sha256(data).hexdigest())
        self.extra_files.append(entry)
        return entry

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest last, then remove what earlier runs left; return the manifest."""
        manifest = {**manifest, "rows": sum(e.rows for e in self.entries),
                    "files": [e.as_json() for e in self.entries]}
        if self.extra_files:
            manifest["side_files"] = [e.as_json() for e in self.extra_files]
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        temp = self.partition / f"{TMP_PREFIX}{uuid.uuid4().hex}-{MANIFEST}"
        with temp.open("wb") as handle:
            handle.write(body)
        temp.rename(self.partition / MANIFEST)
        keep = {MANIFEST, *(e.path for e in self.entries), *(e.path for e in self.extra_files)}
        for child in self.partition.iterdir():
            if child.name not in keep and not child.name.startswith(TMP_PREFIX):
                child.unlink()
        return manifest

    def abort(self) -> None:
        """Remove the data files this run already moved into place (the old manifest stays valid)."""
        for entry in [*self.entries, *self.extra_files]:
            target = self.partition / entry.path
            if target.exists():
                target.unlink()
