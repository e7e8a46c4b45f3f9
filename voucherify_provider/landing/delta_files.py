"""The current-state table's data files: read and written by the provider, committed through delta-rs.

Why not delta-rs's own MERGE: it hash-joins the changes with every target row its predicate leaves in,
and copies every file holding a match through that join, so its memory follows the table (measured in
``make bench`` for one day's 16,000 changes: 0.76 GB at 1M records, 2.8 GB at 10M; with partition
literals in its predicate it still holds the named partitions, ~0.26 GB per million of their records).
Here a change touches only what holds its keys: the table is partitioned by creation month (records never
change ``created_at``, so a key stays in its partition forever), each file of a touched partition is read
for its key column only, and the files holding an older version are streamed once, row group by row
group, into their replacement. One Delta transaction (``create_write_transaction``) then removes the old
files and adds the new ones; the log, its conflict checks, checkpoints and vacuum stay delta-rs's.
Memory: one file's keys, a row group and one chunk of changes, however big the table.

The files keep the landing's Arrow types (string, timestamp[ms, UTC], decimal): delta-rs's writer would
store string_view and timestamp[us], which some pyarrow kernels reject.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from voucherify_provider.landing.sink import open_input, remove_file
from voucherify_provider.landing.spill import partition_order
from voucherify_provider.landing.writer import ROW_GROUP_ROWS, PartWriter

log = logging.getLogger(__name__)
PARTITION = "_created_month"
# A written file's rows at most: bounds one file's keys in memory and what rewriting one file costs.
FILE_ROWS = 1_000_000
# Files below this are packed together by compaction (daily inserts with no rewrite to ride on make them).
SMALL_FILE_ROWS = FILE_ROWS // 4
NULL_SEGMENT = "__HIVE_DEFAULT_PARTITION__"


@dataclass
class DataFile:
    """One data file of the table: in its log, or written by the open transaction (``added`` set)."""

    path: str
    rows: int
    size: int
    partition: str | None
    key_min: str | None = None
    key_max: str | None = None
    added: Any = None

    def may_hold(self, low: str, high: str) -> bool:
        """Whether keys in ``[low, high]`` can be in this file, by its key statistics."""
        if self.key_min is None or self.key_max is None:
            return True
        return not (self.key_max < low or self.key_min > high)


def arrow_schema(delta: Any) -> pa.Schema:
    """The table's columns in the landing's Arrow types (delta-rs reports string_view and timestamp[us])."""
    fields = []
    for f in pa.schema(delta.schema().to_arrow()):
        kind = f.type
        if kind in (pa.string_view(), pa.large_string()):
            kind = pa.string()
        elif pa.types.is_timestamp(kind):
            kind = pa.timestamp("ms", tz="UTC")
        fields.append(pa.field(f.name, kind))
    return pa.schema(fields)


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``'s columns: cast where types differ, null where a column is missing
    (files written before a field was added; legacy files from delta-rs's writer)."""
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else pa.RecordBatch.from_pylist(
            [], schema=batch.schema)
    names = batch.schema.names
    columns = []
    for f in schema:
        if f.name in names:
            column = batch.column(f.name)
            columns.append(column if column.type == f.type else column.cast(f.type, safe=False))
        else:
            columns.append(pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class FileWriter:
    """Writes rows into new files of one partition, starting a new file every ``FILE_ROWS`` rows."""

    def __init__(self, table: ObjectStoragePath, partition: str | None, schema: pa.Schema, key: str) -> None:
        self._table, self._partition, self._schema, self._key = table, partition, schema, key
        self._part: PartWriter | None = None
        self._rows = 0  # given to the open file
        self._path = ""
        self._low: str | None = None
        self._high: str | None = None
        self.done: list[DataFile] = []

    def write(self, rows: pa.RecordBatch | pa.Table) -> None:
        """Append rows (any column order; conformed to the file schema)."""
        batch = conform(rows, self._schema)
        while batch.num_rows:
            part = self._open()
            head, batch = batch.slice(0, FILE_ROWS - self._rows), batch.slice(FILE_ROWS - self._rows)
            self._note_keys(head.column(self._key))
            part.write(head)
            self._rows += head.num_rows
            if self._rows >= FILE_ROWS:
                self._finish()

    def close(self) -> list[DataFile]:
        """Finish the open file; every file written."""
        if self._part is not None:
            self._finish()
        return self.done

    def abort(self) -> None:
        """Drop the file being written (finished ones are the transaction's to remove)."""
        if self._part is not None:
            self._part.abort()
            self._part = None

    def _open(self) -> PartWriter:
        if self._part is None:
            segment = NULL_SEGMENT if self._partition is None else self._partition
            self._path = f"{PARTITION}={segment}/part-{uuid.uuid4().hex}.parquet"
            target = self._table / self._path
            target.parent.mkdir(parents=True, exist_ok=True)
            self._part = PartWriter(target.parent, target.name, self._schema, {}, ROW_GROUP_ROWS, "", at=target,
                                    sorted_by=self._key, distinct=(self._key,))
            self._low = self._high = None
            self._rows = 0
        return self._part

    def _note_keys(self, keys: pa.Array) -> None:
        bounds = pc.min_max(keys)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None:
            self._low = low if self._low is None else min(self._low, low)
            self._high = high if self._high is None else max(self._high, high)

    def _finish(self) -> None:
        from deltalake.transaction import AddAction

        assert self._part is not None
        entry = self._part.close()
        self._part = None
        stats: dict[str, Any] = {"numRecords": entry.rows}
        if self._low is not None:
            stats.update(minValues={self._key: self._low}, maxValues={self._key: self._high})
        action = AddAction(self._path, entry.bytes, {PARTITION: self._partition}, int(time.time() * 1000), True,
                           json.dumps(stats))
        self.done.append(DataFile(self._path, entry.rows, entry.bytes, self._partition, self._low, self._high,
                                  added=action))


@dataclass
class Transaction:
    """One change of the table: the files it wrote and the files they replace, committed as one Delta commit
    (or abandoned, its files deleted). ``schema`` is the table's, partition column included."""

    table: ObjectStoragePath
    delta: Any
    schema: pa.Schema
    key: str
    _files: dict[str | None, list[DataFile]] = field(default_factory=dict)
    _removed: list[DataFile] = field(default_factory=list)
    _written: list[DataFile] = field(default_factory=list)
    _writers: list[FileWriter] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._files = live_files(self.delta, self.key)

    @property
    def file_schema(self) -> pa.Schema:
        """The columns stored in data files: all but the partition column (it lives in the path)."""
        return pa.schema([f for f in self.schema if f.name != PARTITION])

    def partitions(self) -> list[str | None]:
        """The partitions holding files now, in order (null last)."""
        return sorted(self._files, key=partition_order)

    def files(self, partition: str | None) -> list[DataFile]:
        """The partition's files as this transaction sees them."""
        return list(self._files.get(partition, []))

    def read(self, file: DataFile, columns: Sequence[str]) -> pa.Table:
        """Some columns of one file (small: keys and bookkeeping), in the table's types."""
        wanted = pa.schema([self.file_schema.field(c) for c in columns])
        with open_input(self.table / file.path) as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            return pa.Table.from_batches([conform(parquet.read(columns=present), wanted)])

    def batches(self, file: DataFile) -> Iterator[pa.RecordBatch]:
        """Every row of one file, row group by row group, in the table's file schema."""
        with open_input(self.table / file.path) as handle:
            for batch in row_group_batches(handle):
                yield conform(batch, self.file_schema)

    def writer(self, partition: str | None) -> FileWriter:
        """A writer of new files in ``partition``."""
        writer = FileWriter(self.table, partition, self.file_schema, self.key)
        self._writers.append(writer)
        return writer

    def rewrite(self, partition: str | None, files: Sequence[DataFile],
                transform: Callable[[pa.RecordBatch, int], pa.RecordBatch] | None = None,
                extra: Iterable[pa.Table | pa.RecordBatch] = ()) -> list[DataFile]:
        """Stream ``files`` (through ``transform(batch, row offset in its file)`` when given) and then
        ``extra`` rows into new files of ``partition`` that replace them; the new files."""
        writer = self.writer(partition)
        for file in files:
            offset = 0
            for batch in self.batches(file):
                writer.write(batch if transform is None else transform(batch, offset))
                offset += batch.num_rows
        for rows in extra:
            writer.write(rows)
        written = writer.close()
        self.replace(files, written)
        return written

    def replace(self, old: Sequence[DataFile], new: Sequence[DataFile]) -> None:
        """``new`` files take the place of ``old`` ones (empty ``old``: plain additions)."""
        for file in old:
            self._files[file.partition].remove(file)
            if file.added is None:
                self._removed.append(file)
            else:  # written by this transaction and already replaced: never committed
                self._written.remove(file)
                remove_file(self.table / file.path)
        for file in new:
            self._files.setdefault(file.partition, []).append(file)
            self._written.append(file)

    @property
    def changed(self) -> bool:
        """Whether there is anything to commit."""
        return bool(self._removed or self._written)

    def commit(self, operation: str, new_layout: tuple[str, dict[str, str]] | None = None) -> None:
        """One Delta commit removing the replaced files and adding the written ones. ``new_layout`` (the
        table's URI and storage options): the commit replaces the table whole with the written files in the
        partitioned layout (the one-shot migration of an older table)."""
        from deltalake import Schema
        from deltalake.transaction import CommitProperties, RemoveAction, create_table_with_add_actions

        if not self.changed:
            return
        adds = [f.added for f in self._written]
        properties = CommitProperties(custom_metadata={"voucherify_operation": operation})
        if new_layout is not None:
            uri, options = new_layout
            create_table_with_add_actions(uri, Schema.from_arrow(self.schema), adds, mode="overwrite",
                                          partition_by=[PARTITION], storage_options=options,
                                          commit_properties=properties)
        else:
            now = int(time.time() * 1000)
            removes = [RemoveAction(f.path, True, now, f.size, {PARTITION: f.partition} if self._partitioned
                                    else {}) for f in self._removed]
            self.delta.create_write_transaction([*removes, *adds], "append", self.schema,
                                                partition_by=[PARTITION], commit_properties=properties)
        log.info("%s %s: %d file(s) replaced, %d written", operation, self.table, len(self._removed),
                 len(self._written))
        self._removed, self._written = [], []

    def abort(self) -> None:
        """Delete every file this transaction wrote; the table stays as it was."""
        for writer in self._writers:
            writer.abort()
        for file in self._written:
            remove_file(self.table / file.path)
        self._written = []

    @property
    def _partitioned(self) -> bool:
        return PARTITION in self.delta.metadata().partition_columns


def row_group_batches(handle: Any, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows one row group at a time, in batches of at most ``ROW_GROUP_ROWS``.

    Not ``ParquetFile.iter_batches``: with pyarrow 26 its memory grows with the rows read (measured: +230 MB
    over 10M ids, all freed only when the file closes), where a row group at a time stays at one row group.
    """
    parquet = pq.ParquetFile(handle)
    wanted = None if columns is None else [c for c in columns if c in parquet.schema_arrow.names]
    for index in range(parquet.num_row_groups):
        yield from parquet.read_row_group(index, columns=wanted).to_batches(max_chunksize=ROW_GROUP_ROWS)


def live_files(delta: Any, key: str | None = None) -> dict[str | None, list[DataFile]]:
    """The table's files per partition value, with ``key``'s statistics where the log has them."""
    actions = pa.table(delta.get_add_actions(flatten=True))
    names = actions.column_names

    def column(name: str) -> list[Any]:
        return actions.column(name).to_pylist() if name in names else [None] * actions.num_rows

    files: dict[str | None, list[DataFile]] = {}
    for path, rows, size, part, low, high in zip(
            column("path"), column("num_records"), column("size_bytes"), column(f"partition.{PARTITION}"),
            column(f"min.{key}"), column(f"max.{key}"), strict=True):
        files.setdefault(part, []).append(DataFile(path, int(rows or 0), int(size or 0), part, low, high))
    return files


def newest_per_key(rows: pa.Table, key: str, change_at: str) -> pa.Table:
    """One row per key: its newest version (the same record may come twice in one batch of changes)."""
    if rows.num_rows < 2:
        return rows
    ordered = rows.sort_by([(key, "ascending"), (change_at, "descending")])
    keys = ordered.column(key).combine_chunks()
    first = np.ones(len(keys), dtype=bool)
    first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).fill_null(True).to_numpy(
        zero_copy_only=False)
    return ordered.filter(pa.array(first))
