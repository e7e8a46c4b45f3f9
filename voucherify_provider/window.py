"""created_at windows: validation, the API filter that catches every record once, partition names.

Import-light (no pyarrow): operators import this at DAG-parse time.

Voucherify does not document whether ``$after``/``$before`` include the bound (API_NOTES 4). The filter
asks for a superset that is right under every reading: ``$after`` one millisecond before the start
(timestamps have millisecond resolution, so an exclusive bound still yields everything at the start) and
``$before`` the end (an inclusive bound adds the records exactly on the end). The landing step then
keeps exactly the rows created in ``[start, end)``, so consecutive windows share no record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.hooks._endpoints import iso_utc

ONE_MS = timedelta(milliseconds=1)


def as_utc(value: datetime | str, name: str) -> datetime:
    """Parse and check a window bound: a timezone-aware datetime (ISO strings accepted), in UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise VoucherifyConfigError(
                f"{name} {value!r} is not an ISO 8601 datetime; use e.g. 2024-01-01T00:00:00+00:00."
            ) from None
    if not isinstance(value, datetime):
        raise VoucherifyConfigError(f"{name} must be a datetime, got {type(value).__name__}.")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise VoucherifyConfigError(
            f"{name} {value.isoformat()} is naive; pass a timezone-aware datetime (e.g. UTC) so the window "
            "means the same thing on every worker."
        )
    utc = value.astimezone(timezone.utc)
    # A plain datetime: Airflow hands pendulum DateTimes whose arithmetic can drop the zone.
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
                    tzinfo=timezone.utc)


@dataclass(frozen=True)
class Window:
    """A half-open created_at interval ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime | str | None, end: datetime | str | None) -> Window:
        """Validate bounds: both present, aware, and the end strictly after the start."""
        if start is None or end is None:
            raise VoucherifyConfigError(
                "A windowed export needs window_start and window_end (by default the run's data interval). "
                "This run has none: use a timetable with real data intervals, e.g. "
                "CronDataIntervalTimetable('@daily', timezone='UTC'), or pass the window explicitly."
            )
        s, e = as_utc(start, "window_start"), as_utc(end, "window_end")
        if e <= s:
            raise VoucherifyConfigError(
                f"window_end {e.isoformat()} is not after window_start {s.isoformat()}: the window is empty. "
                "Airflow 3 cron schedules have zero-length data intervals by default; use "
                "CronDataIntervalTimetable / DeltaDataIntervalTimetable for real windows."
            )
        return cls(s, e)

    @classmethod
    def for_run(cls, start: datetime | str | None, end: datetime | str | None, context: Mapping[str, Any]) -> Window:
        """The explicit bounds where given, else the run's data interval."""
        return cls.of(start if start is not None else context.get("data_interval_start"),
                      end if end is not None else context.get("data_interval_end"))

    def api_filter(self) -> dict[str, Any]:
        """The ``created_at`` condition catching every record of the window whatever the bound rules."""
        return {"conditions": {"$after": [iso_utc(self.start - ONE_MS)], "$before": [iso_utc(self.end)]}}

    @property
    def partition(self) -> str:
        """Hive-style partition segment, no colons: ``window_start=20240101T000000Z``."""
        return f"window_start={partition_stamp(self.start)}"


def partition_stamp(value: datetime) -> str:
    """Compact UTC stamp usable in any path segment (``20240101T000000Z``)."""
    return value.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def merge_filters(user: Mapping[str, Any] | None, window: Window | None) -> dict[str, Any] | None:
    """User filters (already checked: ``ExportedObject.validate_filters``) combined with the window; the
    window always narrows (``and``)."""
    user = dict(user or {})
    if window is None:
        return user or None
    if "created_at" in user:
        raise VoucherifyConfigError(
            "filters already constrain created_at and a window is set; drop one (the window comes from "
            "window_start/window_end or the data interval)."
        )
    if user.get("junction") == "or" and len(user) > 2:
        raise VoucherifyConfigError(
            "filters use junction 'or' with several conditions; that cannot be combined with a created_at "
            "window (it would widen it). Use junction 'and' or export without a window."
        )
    merged = {**user, "junction": "and", "created_at": window.api_filter()}
    return merged
