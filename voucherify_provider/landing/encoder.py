"""Parquet encoding on its own thread, so parsing the next rows and encoding the last ones overlap.

The caller's thread parses CSV (pyarrow releases the GIL while it does) and hands each finished row group
over a queue of ``depth`` tables; this thread encodes and compresses them (also GIL-free) meanwhile.
Memory stays bounded: ``depth`` queued row groups plus the one being encoded. A deeper queue bought no
speed on 2 cores (2M rows: 2.0-2.1 s at depth 1 and 2) and cost ~40 MB.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pyarrow as pa

_STOP = object()


class BackgroundEncoder:
    """Writes tables to a ParquetWriter on a daemon thread, one row group per table.

    :param writer: the ``pyarrow.parquet.ParquetWriter``; only this thread touches it until :meth:`finish`.
    :param depth: row groups that may wait in the queue (backpressure beyond that).
    """

    def __init__(self, writer: Any, depth: int = 1) -> None:
        self._writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voucherify-parquet-encoder", daemon=True)
        self._thread.start()

    def put(self, table: Any) -> None:
        """Queue one row group; waits while the queue is full; re-raises an encoder failure."""
        while True:
            self._raise_failure()
            try:
                self._queue.put(table, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every queued row group is written; re-raise what the encoder met."""
        self.put(_STOP)
        self._thread.join()
        self._raise_failure()

    def cancel(self) -> None:
        """Stop encoding (what is queued is dropped) and wait for the thread to end."""
        self._cancelled.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:  # the thread is between gets: it checks the cancel flag on its next one
            pass
        self._thread.join(timeout=60)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            table = self._queue.get()
            if table is _STOP or self._cancelled.is_set():
                return
            try:
                self._writer.write_table(table, row_group_size=table.num_rows)
                del table
                # The allocator keeps freed row groups cached per thread; handing them back keeps the
                # task's memory flat (~35 MB less peak RSS at 2M rows, no measurable time).
                pa.default_memory_pool().release_unused()
            except BaseException as err:  # handed to the producer on its next put (which no longer waits)
                self._error = err
                return
