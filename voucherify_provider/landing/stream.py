"""A file-like view over an iterator of byte chunks, so pyarrow can read a download as it arrives."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator


class IterStream(io.RawIOBase):
    """Read-only stream over byte chunks; memory holds at most one chunk beyond what the reader asked."""

    def __init__(self, chunks: Iterator[bytes], on_progress: Callable[[int], None] | None = None) -> None:
        self._chunks = chunks
        self._pending = b""
        self._on_progress = on_progress
        self.bytes_read = 0

    def read_line(self) -> bytes:
        """Bytes up to and including the first newline (or to the end): the header row."""
        line = b""
        while True:
            if not self._pending:
                try:
                    self._pending = next(self._chunks)
                except StopIteration:
                    return line
                continue
            cut = self._pending.find(b"\n")
            if cut >= 0:
                line += self._pending[: cut + 1]
                self._pending = self._pending[cut + 1 :]
                self.bytes_read += cut + 1
                return line
            line += self._pending
            self.bytes_read += len(self._pending)
            self._pending = b""

    def at_end(self) -> bool:
        """True when no byte is left (pulls the next chunk to know)."""
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return True
        return False

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` completely unless the stream ends; 0 means end of stream.

        Short reads would make pyarrow's streaming CSV reader treat each network chunk as a block, and
        a quoted value spanning them fails ("straddles two block boundaries").
        """
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                try:
                    self._pending = next(self._chunks)
                except StopIteration:
                    break
                continue
            size = min(len(view) - filled, len(self._pending))
            view[filled : filled + size] = self._pending[:size]
            self._pending = self._pending[size:]
            filled += size
        self.bytes_read += filled
        if self._on_progress is not None and filled:
            self._on_progress(filled)
        return filled
