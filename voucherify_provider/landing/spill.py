"""Rows routed by partition into local spill files, read back one partition at a time in bounded chunks.

A merge or a reconcile works partition by partition, but its input arrives in any order (a change window
spans a few months, an id list or a history load all of them). Each incoming batch is split by partition
and appended to that partition's Arrow IPC file in a temporary folder (uncompressed: written once, read
once, on the worker's local disk), so memory holds one batch and one chunk, whatever the input's size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# Rows of one partition processed together: bounds the changes (or ids) in memory at once.
CHUNK_ROWS = 500_000
# Spill files open at once, at most: a history load routes rows to one file per day of its span, and a
# file closed early means a new segment (its own schema header) for every later write to that day.
MAX_OPEN = 4096
FOLDER_PREFIX = "voucherify-spill-"


def open_file_budget() -> int:
    """How many spill files this process may keep open: the soft limit on file descriptors is raised to the
    hard one where it is lower (it often is 1024), keeping 256 for everything else the process opens."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(MAX_OPEN + 256, hard if hard != resource.RLIM_INFINITY else MAX_OPEN + 256)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # not allowed here: live with the limit there is
            pass
    return max(16, min(MAX_OPEN, (MAX_OPEN + 256 if soft == resource.RLIM_INFINITY else soft) - 256))


def partition_order(partition: str | None) -> tuple[bool, str]:
    """Sort key of partition values: in order, null last."""
    return partition is None, partition or ""


class Spill:
    """Rows of ``schema`` spilled per partition value (``partition_of`` gives each row's, null allowed).

    At most ``max_open`` spill files are open at once (default: what the process's file limit allows, up to
    ``MAX_OPEN``): beyond, the least recently written one is closed and that partition continues in a new
    segment file. ``owner`` (a task instance's staging owner) names the folder, so a retry of that task on
    the same worker removes what a killed try left.
    :meth:`checkpoint` and :meth:`rollback` drop what was spilled since, for an input read again from the
    start (a download that broke off).
    """

    def __init__(self, schema: pa.Schema, partition_of: Callable[[pa.RecordBatch], pa.Array],
                 max_open: int | None = None, owner: str | None = None) -> None:
        self.schema = schema
        self._partition_of = partition_of
        self._max_open = max_open or open_file_budget()
        prefix = f"{FOLDER_PREFIX}{owner}-" if owner else FOLDER_PREFIX
        if owner:
            for left in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
                shutil.rmtree(left, ignore_errors=True)
        self._folder = Path(tempfile.mkdtemp(prefix=prefix))
        self._open: OrderedDict[str | None, Any] = OrderedDict()
        self._segments: dict[str | None, int] = {}
        self._rows: dict[str | None, int] = {}
        self._read: set[str | None] = set()
        self._mark: tuple[dict[str | None, int], dict[str | None, int]] = ({}, {})

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
        distinct = pc.unique(values)
        if len(distinct) == 1:  # the common case (input in order): the batch goes whole
            self._write(distinct[0].as_py(), batch)
            return
        order = pc.sort_indices(values)  # nulls last
        grouped, keys = batch.take(order), values.take(order)
        offset = 0
        for entry in pc.value_counts(keys):  # sorted input: the runs in order of appearance
            count = entry["counts"].as_py()
            self._write(entry["values"].as_py(), grouped.slice(offset, count))
            offset += count

    def partitions(self) -> list[str | None]:
        """The partitions rows were spilled to, in order (null last)."""
        return sorted((p for p, n in self._rows.items() if n), key=partition_order)

    def rows(self, partition: str | None) -> int:
        """How many rows were spilled to ``partition``."""
        return self._rows.get(partition, 0)

    def checkpoint(self) -> None:
        """Close the open files: what was spilled so far survives a later :meth:`rollback`."""
        self._close_open()
        self._mark = (dict(self._segments), dict(self._rows))

    def rollback(self) -> None:
        """Drop every row spilled since the last :meth:`checkpoint` (or since the start)."""
        self._close_open()
        segments, rows = self._mark
        for partition, count in self._segments.items():
            for segment in range(segments.get(partition, 0), count):
                self._file(partition, segment).unlink(missing_ok=True)
        self._segments, self._rows = dict(segments), dict(rows)

    def chunks(self, partition: str | None, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
        """The partition's rows as tables of at most ``chunk_rows`` rows (none for an unknown partition)."""
        if partition not in self._segments:
            return
        writer = self._open.pop(partition, None)
        if writer is not None:  # the first read closes the file: readable from now on, not writable
            writer.close()
        self._read.add(partition)
        pending: list[pa.RecordBatch] = []
        count = 0
        for segment in range(self._segments[partition]):
            with pa.OSFile(str(self._file(partition, segment)), "rb") as handle:
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
        self._close_open()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _write(self, partition: str | None, rows: pa.RecordBatch) -> None:
        self._writer(partition).write_batch(rows)
        self._rows[partition] = self._rows.get(partition, 0) + rows.num_rows

    def _writer(self, partition: str | None) -> Any:
        writer = self._open.get(partition)
        if writer is not None:
            self._open.move_to_end(partition)
            return writer
        if partition in self._read:
            raise RuntimeError(f"partition {partition!r} was already read back; spill everything first")
        while len(self._open) >= self._max_open:
            self._open.popitem(last=False)[1].close()
        segment = self._segments.get(partition, 0)
        writer = pa.ipc.new_stream(str(self._file(partition, segment)), self.schema)
        self._segments[partition] = segment + 1
        self._open[partition] = writer
        return writer

    def _close_open(self) -> None:
        while self._open:
            self._open.popitem(last=False)[1].close()

    def _file(self, partition: str | None, segment: int) -> Path:
        return self._folder / f"{'null' if partition is None else f'p-{partition}'}-{segment}"
