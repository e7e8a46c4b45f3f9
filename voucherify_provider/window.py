"""created_at windows: validation, the API filter that catches every record once, partition names.

Import-light (no pyarrow): operators import this at DAG-parse time.

Voucherify does not document whether ``$after``/``$before`` include the bound (API_NOTES 4). The filter
asks for a superset that is right under every reading: ``$after`` one millisecond before the start
(timestamps have millisecond resolution, so an exclusive bound still yields everything at the start) and
``$before`` the end (an inclusive bound adds the records exactly on the end). The landing step then
keeps exactly the rows created in ``[start, end)``, so consecutive windows share no record.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.utc import ONE_MS, as_utc, iso_utc


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
                "This run has none, and its DAG's timetable has no interval to infer one from (runs triggered "
                "without a logical date, or by an asset, have no data interval). Trigger it with a logical date: "
                "`airflow dags trigger DAG_ID -l 2024-01-02T00:00:00+00:00`, or in the REST API "
                '`POST /api/v2/dags/DAG_ID/dagRuns` with `"logical_date": "2024-01-02T00:00:00Z"`; use a timetable '
                "with real intervals (CronDataIntervalTimetable('@daily', timezone='UTC')); or pass "
                "window_start/window_end explicitly."
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
        """The explicit bounds where given, else the run's data interval, else (a run without one: triggered
        with no logical date, or by an asset) the latest complete interval of the DAG's timetable before the
        run, i.e. what the scheduler would have given a run at that moment."""
        start, end = _explicit_or_interval(start, end, context)
        if start is None and end is None and (inferred := latest_complete_interval(context)) is not None:
            return inferred
        return cls.of(start, end)

    @classmethod
    def snapshot(cls, start: datetime | str | None, end: datetime | str | None,
                 context: Mapping[str, Any]) -> Window:
        """A snapshot needs no window, only a name for its partition: the explicit bounds or the run's data
        interval where there is one (possibly zero-length), else the instant the run was due (``run_after``)."""
        start, end = _explicit_or_interval(start, end, context)
        if start is None:
            start = getattr(context.get("dag_run"), "run_after", None) or datetime.now(timezone.utc)
        s = as_utc(start, "window_start")
        return cls(s, max(s, as_utc(end, "window_end")) if end is not None else s)

    def api_filter(self) -> dict[str, Any]:
        """The ``created_at`` condition catching every record of the window whatever the bound rules."""
        return {"conditions": {"$after": [iso_utc(self.start - ONE_MS)], "$before": [iso_utc(self.end)]}}

    def split(self, schedule: str, max_intervals: int = 100_000) -> list[Window]:
        """The intervals of the cron ``schedule`` (UTC; Airflow's presets such as ``@daily`` too) that tile
        this window: the data intervals a DAG on that schedule gives its runs over the same span.

        Both bounds must be interval boundaries of the schedule, else the first or last piece would be a
        partial interval that no run of that DAG lands."""
        from croniter import croniter

        fire = croniter(cron_schedule(schedule), self.start - timedelta(microseconds=1))
        bounds = [fire.get_next(datetime)]
        if bounds[0] != self.start:
            raise VoucherifyConfigError(
                f"The window starts at {self.start.isoformat()}, which is not an interval boundary of "
                f"{schedule!r} (the next one is {bounds[0].isoformat()}): its first partition would hold part of "
                "an interval. Start the window on a boundary of the schedule (for '@daily': midnight UTC).")
        while bounds[-1] < self.end:
            if len(bounds) > max_intervals:
                raise VoucherifyConfigError(
                    f"[{self.start.isoformat()}, {self.end.isoformat()}) holds more than {max_intervals} intervals "
                    f"of {schedule!r}; split it into shorter windows.")
            bounds.append(fire.get_next(datetime))
        if bounds[-1] != self.end:
            raise VoucherifyConfigError(
                f"The window ends at {self.end.isoformat()}, which is not an interval boundary of {schedule!r} "
                f"(the intervals around it end at {bounds[-2].isoformat()} and {bounds[-1].isoformat()}): its last "
                "partition would hold part of an interval. End the window on a boundary of the schedule.")
        return [Window(as_utc(a, "start"), as_utc(b, "end")) for a, b in itertools.pairwise(bounds)]

    @property
    def partition(self) -> str:
        """Hive-style partition segment, no colons: ``window_start=20240101T000000Z``."""
        return f"window_start={partition_stamp(self.start)}"


def _explicit_or_interval(start: datetime | str | None, end: datetime | str | None,
                          context: Mapping[str, Any]) -> tuple[Any, Any]:
    """Each bound as given, else the run's data interval's (None for a run without one)."""
    return (start if start is not None else context.get("data_interval_start"),
            end if end is not None else context.get("data_interval_end"))


def latest_complete_interval(context: Mapping[str, Any]) -> Window | None:
    """The last complete data interval of the run's DAG timetable ending at or before the run's
    ``run_after``; None when the timetable has no intervals (asset-triggered, zero-length cron, none)."""
    timetable = getattr(context.get("dag"), "timetable", None)
    run_after = getattr(context.get("dag_run"), "run_after", None)
    if timetable is None or run_after is None:
        return None
    try:  # Airflow 3.2+: DAG files hold SDK timetables (definitions only); the scheduling logic is core's
        from airflow.serialization.encoders import coerce_to_core_timetable

        timetable = coerce_to_core_timetable(timetable)
    except (ImportError, TypeError, ValueError):
        pass  # older: the DAG already holds the core timetable
    infer = getattr(timetable, "infer_manual_data_interval", None)
    if infer is None:
        return None
    import pendulum

    interval = infer(run_after=pendulum.instance(as_utc(run_after, "run_after")))
    if interval is None or interval.end is None or interval.start is None or interval.end <= interval.start:
        return None
    return Window.of(interval.start, interval.end)


def cron_schedule(schedule: str) -> str:
    """The cron expression of ``schedule`` (Airflow's presets resolved), checked."""
    from croniter import croniter

    expression = _cron_presets().get(schedule, schedule)
    try:
        croniter(expression)
    except (ValueError, KeyError) as err:
        raise VoucherifyConfigError(
            f"partition_schedule {schedule!r} is not a cron expression ({err}); use the schedule of the DAG "
            "whose partitions the landing must match, e.g. '@daily' or '0 0 * * *'.") from None
    return expression


def _cron_presets() -> dict[str, str]:
    """Airflow's cron presets (``@daily``, ``@quarterly``...), as its timetables resolve them."""
    from airflow.utils.dates import cron_presets

    return dict(cron_presets)


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


def change_filters(user: Mapping[str, Any] | None, window: Window | None, updated_field: str) -> dict[str, Any] | None:
    """The change window: records created **or** updated in the window, one condition pair per field.

    Whether the API applies ``or`` between fields (each field's ``$after``/``$before`` together) or between
    every single condition is not documented; under the second reading the export is a superset. Either
    way the landing keeps exactly the rows whose last change (``updated_at``, else ``created_at``) is in
    ``[start, end)``, as for created_at windows.
    """
    if user:
        raise VoucherifyConfigError(
            "filters cannot be combined with an incremental export: its window is an 'or' of created_at and "
            f"{updated_field}, which further conditions would widen. Drop filters (and filter the landed data), "
            "or export with incremental=False."
        )
    if window is None:
        return None
    return {"junction": "or", "created_at": window.api_filter(), updated_field: window.api_filter()}
