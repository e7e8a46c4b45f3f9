"""Faults on demand, kept apart from the emulator's data and HTTP layer.

Two sources, consulted in order for every API request: faults scripted by a test through
``POST /_emulator/faults`` (consumed first-in first-out per route), then random faults whose rates are
settings, drawn from an RNG seeded with the emulator's seed (the same request sequence gets the same
faults). A per-minute rate limiter adds the ``X-Rate-Limit-*`` headers and answers 429 when exceeded.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from voucherify_provider.emulator.config import EmulatorConfig


@dataclass
class Fault:
    """One injected misbehaviour for one request."""

    route: str = "*"
    status: int | None = None  # answer this HTTP status instead of the real response
    retry_after: float | None = None  # with status 429/503: the Retry-After header
    delay: float = 0.0  # sleep before answering
    truncate: bool = False  # downloads: cut the body off half-way
    stall: float = 0.0  # downloads: send the first chunk, then pause this long mid-body (a landing in flight)
    export_error: bool = False  # create_export: the export ends in ERROR
    body_base64: str | None = None  # downloads: serve these bytes instead of the export file (broken files)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build from an admin request body, rejecting unknown keys."""
        unknown = set(data) - set(cls.__dataclass_fields__) - {"count"}
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**{k: v for k, v in data.items() if k != "count"})


@dataclass
class FaultInjector:
    """Decides which fault, if any, hits each request."""

    config: EmulatorConfig
    scripted: deque[Fault] = field(default_factory=deque)
    injected: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)

    def script(self, faults: list[dict[str, Any]]) -> int:
        """Queue faults (each may carry ``count``); return how many are queued in all."""
        with self._lock:
            for spec in faults:
                fault = Fault.from_json(spec)
                self.scripted.extend(Fault(**fault.__dict__) for _ in range(int(spec.get("count", 1))))
            return len(self.scripted)

    def clear(self) -> None:
        """Drop scripted faults and counters."""
        with self._lock:
            self.scripted.clear()
            self.injected.clear()
            self._rng = random.Random(self.config.seed)

    def draw(self, route: str) -> Fault | None:
        """The fault for this request of ``route`` (e.g. ``get_export``, ``download_export``), or None."""
        with self._lock:
            for fault in self.scripted:
                if fault.route in ("*", route):
                    self.scripted.remove(fault)
                    return self._count(fault, "scripted")
            return self._random(route)

    def _random(self, route: str) -> Fault | None:
        c, roll = self.config, self._rng.random()
        if route == "create_export" and self._rng.random() < c.fault_rate_export_error:
            return self._count(Fault(route, export_error=True), "random")
        if route == "download_export" and self._rng.random() < c.fault_rate_truncate:
            return self._count(Fault(route, truncate=True), "random")
        if roll < c.fault_rate_5xx:
            return self._count(Fault(route, status=self._rng.choice((500, 502, 503))), "random")
        roll -= c.fault_rate_5xx
        if roll < c.fault_rate_429:
            return self._count(Fault(route, status=429, retry_after=1), "random")
        roll -= c.fault_rate_429
        if roll < c.fault_rate_slow:
            return self._count(Fault(route, delay=c.slow_seconds), "random")
        return None

    def _count(self, fault: Fault, source: str) -> Fault:
        kind = (f"status_{fault.status}" if fault.status else "truncate" if fault.truncate
                else "export_error" if fault.export_error else "stall" if fault.stall else "slow")
        key = f"{source}:{kind}"
        self.injected[key] = self.injected.get(key, 0) + 1
        return fault


@dataclass
class RateLimiter:
    """Fixed one-minute windows, like Voucherify's per-minute plans."""

    config: EmulatorConfig
    clock: Any = time.time
    _window: int = -1
    _used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[bool, dict[str, str]]:
        """Count one request; return whether it may proceed and the rate-limit headers to send."""
        limit = self.config.rate_limit_per_minute or 1_000_000
        with self._lock:
            now = self.clock()
            window = int(now // 60)
            if window != self._window:
                self._window, self._used = window, 0
            allowed = self._used < limit
            if allowed:
                self._used += 1
            reset = (window + 1) * 60
            headers = {
                "X-Rate-Limit-Limit": str(limit),
                "X-Rate-Limit-Remaining": str(max(0, limit - self._used)),
                "X-Rate-Limit-Retry": str(reset),
                "X-Rate-Limit-Type": "per_minute",
            }
            if not allowed:
                headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
            return allowed, headers

    def reset(self) -> None:
        """Forget the current window."""
        with self._lock:
            self._window, self._used = -1, 0
