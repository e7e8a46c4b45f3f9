"""A file-like view over an iterator of byte chunks, so pyarrow can read a download as it arrives."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator


class IterStream(io.RawIOBase):
    """Read-only stream over byte chunks; memory holds at most one chunk beyond what the reader asked.

    A chunk is kept whole with a read position, so handing out part of it copies nothing but the bytes
    the reader asked for (straight into its buffer).
    """

    def __init__(self, chunks: Iterator[bytes], on_progress: Callable[[int], None] | None = None) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0
        self._on_progress = on_progress
        self.bytes_read = 0

    def _fill(self) -> bool:
        """Make sure unread bytes are pending; False at the end of the stream."""
        while self._pos >= len(self._chunk):
            try:
                self._chunk, self._pos = bytes(next(self._chunks)), 0
            except StopIteration:
                self._chunk, self._pos = b"", 0
                return False
        return True

    def read_line(self) -> bytes:
        """Bytes up to and including the first newline (or to the end): the header row."""
        line = b""
        while self._fill():
            cut = self._chunk.find(b"\n", self._pos)
            end = len(self._chunk) if cut < 0 else cut + 1
            line += self._chunk[self._pos : end]
            self.bytes_read += end - self._pos
            self._pos = end
            if cut >= 0:
                break
        return line

    def at_end(self) -> bool:
        """True when no byte is left (pulls the next chunk to know)."""
        return not self._fill()

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
        while filled < len(view) and self._fill():
            size = min(len(view) - filled, len(self._chunk) - self._pos)
            view[filled : filled + size] = memoryview(self._chunk)[self._pos : self._pos + size]
            self._pos += size
            filled += size
        self.bytes_read += filled
        if self._on_progress is not None and filled:
            self._on_progress(filled)
        return filled
