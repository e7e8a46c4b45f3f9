"""The API requests served (admin routes excluded), for tests to count and inspect."""

from __future__ import annotations

import threading
import time
from typing import Any

MAX_ENTRIES = 50_000  # a bound on memory for long benchmark runs; counts keep going past it


class RequestLog:
    """Counts per route and the first :data:`MAX_ENTRIES` requests in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every request."""
        with self._lock:
            self.counts: dict[str, int] = {}
            self.entries: list[dict[str, Any]] = []

    def record(self, route: str, method: str, path: str, status: int) -> None:
        """Note one request of ``route`` answered with ``status``."""
        with self._lock:
            self.counts[route] = self.counts.get(route, 0) + 1
            if len(self.entries) < MAX_ENTRIES:
                self.entries.append({"route": route, "method": method, "path": path, "status": status,
                                     "at": time.time()})

    def snapshot(self) -> dict[str, Any]:
        """Copies of the counts and the log."""
        with self._lock:
            return {"counts": dict(self.counts), "log": list(self.entries)}
