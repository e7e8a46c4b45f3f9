"""Settings of the Voucherify emulator, including the behaviours the real API leaves unknown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

DEFAULT_START = datetime(2024, 1, 1, tzinfo=timezone.utc)
DEFAULT_END = datetime(2024, 1, 8, tzinfo=timezone.utc)


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator's data and behaviour. All of it can change at run time
    through ``PATCH /_emulator/config`` except the dataset (seed, scale, date range)."""

    app_id: str = "emulator-app-id"
    app_token: str = field(default="emulator-app-token", repr=False)
    seed: int = 42
    # Number of redemptions; the other objects are sized in proportion (see dataset.SIZES).
    scale: int = 1000
    start: datetime = DEFAULT_START
    end: datetime = DEFAULT_END

    # Export lifecycle: seconds spent SCHEDULED, then IN_PROGRESS, before DONE.
    scheduled_seconds: float = 0.0
    in_progress_seconds: float = 0.2
    # When above ``in_progress_seconds``: each export's IN_PROGRESS time is drawn (seeded, uniform) between
    # the two, as real exports of different sizes take different times.
    in_progress_seconds_max: float = 0.0
    # On top of that, an export stays IN_PROGRESS for ``rows / export_rows_per_second`` seconds (0 = size does
    # not matter): a real export of millions of rows takes far longer than one of 100. The real rate is
    # undocumented, hence a setting.
    export_rows_per_second: float = 0.0
    # Unknown in the real API (API_NOTES 4): whether $after / $before include the bound itself.
    after_inclusive: bool = False
    before_inclusive: bool = False
    # Unknown in the real API (API_NOTES 1): how long a download token stays valid (0 = forever).
    download_token_ttl_seconds: float = 0.0
    # Unknown in the real API (API_NOTES 1): split results above this many rows into files (0 = never).
    chunk_rows: int = 0
    # Base URL put in ``result.url`` (default: the URL the request came in on). Tests point it at another
    # listener to prove credentials never follow a foreign download host.
    download_base_url: str = ""
    # CSV header row: "labels" (as documented: ID,Code,Voucher Type) or "keys".
    csv_headers: str = "labels"
    # Money in CSV: "fixed2" renders 2000.00 (as the documented sample), "minimal" renders 2000.
    money_format: str = "fixed2"
    # Requests per minute; 0 disables the limiter. Headers are sent either way.
    rate_limit_per_minute: int = 0
    # Directory where each export's CSV is rendered once and then served from disk, as the real download
    # host serves a stored file (empty = render on every download; generation is ~20k rows/s).
    export_cache_dir: str = ""

    # The data as it was at this instant (ISO 8601, exclusive like a window end): what is created, updated
    # or deleted at or after it has not happened yet. Empty: all of the generated history (it lies in the
    # past). Tests move it as days pass.
    data_clock: str = ""
    # Unknown in the real API: what ``junction: or`` joins when a field has two conditions ($after and
    # $before). "field": each field's conditions hold together, fields are or-ed; "condition": any one
    # condition is enough (a change window then matches nearly everything: a superset).
    or_junction: str = "field"

    # Random faults, deterministic for a given seed and request sequence (probabilities 0..1).
    fault_rate_5xx: float = 0.0
    fault_rate_429: float = 0.0
    fault_rate_slow: float = 0.0
    slow_seconds: float = 1.0
    fault_rate_truncate: float = 0.0
    fault_rate_export_error: float = 0.0

    MUTABLE_AT_RUNTIME = (
        "scheduled_seconds", "in_progress_seconds", "in_progress_seconds_max", "export_rows_per_second",
        "after_inclusive", "before_inclusive",
        "download_token_ttl_seconds", "download_base_url", "chunk_rows", "csv_headers", "money_format",
        "rate_limit_per_minute", "export_cache_dir", "data_clock", "or_junction",
        "fault_rate_5xx", "fault_rate_429", "fault_rate_slow", "slow_seconds", "fault_rate_truncate",
        "fault_rate_export_error",
    )

    def __post_init__(self) -> None:
        self._check_export_rate()  # the command line and the pytest marker build configs directly

    def _check_export_rate(self) -> None:
        if self.export_rows_per_second < 0:
            raise ValueError(f"export_rows_per_second must be >= 0, not {self.export_rows_per_second}")

    def public(self) -> dict[str, Any]:
        """The settings as JSON, without the app token."""
        data = asdict(self)
        data.pop("app_token")
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return data

    def update(self, changes: dict[str, Any]) -> None:
        """Apply run-time changes, rejecting unknown or dataset-shaping keys."""
        known = {f.name: f for f in fields(self)}
        for key, value in changes.items():
            if key not in self.MUTABLE_AT_RUNTIME:
                raise ValueError(f"{key!r} cannot change at run time; allowed: {', '.join(self.MUTABLE_AT_RUNTIME)}")
            current = getattr(self, key)
            setattr(self, key, type(current)(value) if known[key] else value)
        if self.csv_headers not in ("labels", "keys"):
            raise ValueError("csv_headers must be 'labels' or 'keys'")
        if self.money_format not in ("fixed2", "minimal"):
            raise ValueError("money_format must be 'fixed2' or 'minimal'")
        if self.or_junction not in ("field", "condition"):
            raise ValueError("or_junction must be 'field' or 'condition'")
        self._check_export_rate()
        if self.data_clock:
            datetime.fromisoformat(self.data_clock.replace("Z", "+00:00"))  # ValueError names the bad value
