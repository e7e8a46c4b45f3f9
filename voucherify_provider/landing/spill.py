"""Rows routed by partition into local spill files, read back one partition at a time in bounded chunks.

A merge or a reconcile works partition by partition, but its input arrives in any order (a change window
spans a few months, an id list or a history load all of them). Each incoming batch is split by partition
and appended to that partition's Arrow IPC file in a temporary folder (uncompressed: written once, read
once, on the worker's local disk), so memory holds one batch and one chunk, whatever the input's size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# Rows of one partition processed together: bounds the changes (or ids) in memory at once.
CHUNK_ROWS = 500_000


def partition_order(partition: str | None) -> tuple[bool, str]:
    """Sort key of partition values: in order, null last."""
    return partition is None, partition or ""


class Spill:
    """Rows of ``schema`` spilled per partition value (``partition_of`` gives each row's, null allowed)."""

    def __init__(self, schema: pa.Schema, partition_of: Callable[[pa.RecordBatch], pa.Array]) -> None:
        self.schema = schema
        self._partition_of = partition_of
        self._folder = Path(tempfile.mkdtemp(prefix="voucherify-spill-"))
        self._writers: dict[str | None, Any] = {}
        self._rows: dict[str | None, int] = {}

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def add(self, batch: pa.RecordBatch) -> None:
        """Route one batch's rows to their partitions' files."""
        if not batch.num_rows:
            return
        values = self._partition_of(batch)
        for value in pc.unique(values).to_pylist():
            rows = batch.filter(pc.is_null(values) if value is None else pc.equal(values, value).fill_null(False))
            self._writer(value).write_batch(rows)
            self._rows[value] = self._rows.get(value, 0) + rows.num_rows

    def partitions(self) -> list[str | None]:
        """The partitions rows were spilled to, in order (null last)."""
        return sorted(self._rows, key=partition_order)

    def rows(self, partition: str | None) -> int:
        """How many rows were spilled to ``partition``."""
        return self._rows.get(partition, 0)

    def chunks(self, partition: str | None, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
        """The partition's rows as tables of at most ``chunk_rows`` rows (none for an unknown partition)."""
        if partition not in self._writers:
            return
        writer = self._writers.get(partition)
        if writer is not None:  # the first read closes the file: readable from now on, not writable
            writer.close()
            self._writers[partition] = None
        with pa.OSFile(str(self._file(partition)), "rb") as handle:
            pending: list[pa.RecordBatch] = []
            count = 0
            for batch in pa.ipc.open_stream(handle):
                while batch.num_rows:
                    take = batch.slice(0, chunk_rows - count)
                    batch = batch.slice(take.num_rows)
                    pending.append(take)
                    count += take.num_rows
                    if count == chunk_rows:
                        yield pa.Table.from_batches(pending, schema=self.schema)
                        pending, count = [], 0
            if pending:
                yield pa.Table.from_batches(pending, schema=self.schema)

    def close(self) -> None:
        """Close and delete every spill file."""
        for writer in self._writers.values():
            if writer is not None:
                writer.close()
        self._writers = {}
        shutil.rmtree(self._folder, ignore_errors=True)

    def _writer(self, partition: str | None) -> Any:
        writer = self._writers.get(partition)
        if writer is None:
            if partition in self._writers:
                raise RuntimeError(f"partition {partition!r} was already read back; spill everything first")
            writer = pa.ipc.new_stream(str(self._file(partition)), self.schema)
            self._writers[partition] = writer
        return writer

    def _file(self, partition: str | None) -> Path:
        return self._folder / ("null" if partition is None else f"p-{partition}")
