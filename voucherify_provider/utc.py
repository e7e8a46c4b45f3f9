"""UTC instants, one way everywhere: window bounds parsed and checked, the API's ISO form, millisecond steps.

The ground floor of the package (it imports nothing of the provider but its errors), so the hooks, the
windows and the landing agree on what an instant is.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from voucherify_provider.errors import VoucherifyConfigError

ONE_MS = timedelta(milliseconds=1)
"""The API's resolution: timestamps carry milliseconds."""


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


def iso_utc(value: datetime | str) -> str:
    """Render a timezone-aware datetime as the API's UTC ISO 8601 with milliseconds (strings pass as given)."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise VoucherifyConfigError(
            f"datetime {value.isoformat()} is naive; pass a timezone-aware datetime (e.g. UTC)."
        )
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def plus_one_ms(iso: str) -> str:
    """The API instant one millisecond after an ISO timestamp the API returned (``...Z``)."""
    return iso_utc(datetime.fromisoformat(iso.replace("Z", "+00:00")) + ONE_MS)
