"""The emulator's deterministic dataset, generated lazily from (seed, scale, date range).

No record is stored: record ``i`` of an object is a pure function of the seed and ``i``, so millions of
rows cost no memory and every process (server, tests, benchmarks) sees the same data. Creation times
grow with ``i`` (binary search finds a window) and every midnight in the range carries one record
exactly on it, so window-boundary handling is always exercised.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from voucherify_provider.catalog import OBJECTS

DAY_MS = 86_400_000
# Records of each object per redemption (``scale`` is the number of redemptions).
SIZES = {
    "redemption": 1.0, "voucher": 0.5, "order": 0.5, "voucher_transactions": 0.5, "publication": 0.33,
    "customer": 0.25, "points_expiration": 0.2,
}
ID_PREFIX = {
    "redemption": "r_", "voucher": "v_", "order": "ord_", "voucher_transactions": "vtx_", "publication": "pub_",
    "customer": "cust_", "points_expiration": "lopb_",
}
FAILURE_CODES = (
    "resource_not_found", "voucher_not_active", "voucher_expired", "voucher_disabled", "quantity_exceeded",
    "gift_amount_exceeded", "customer_rules_violated", "order_rules_violated", "invalid_order", "invalid_amount",
    "missing_amount", "missing_order_items", "missing_customer",
)
FIRST = ("Anna", "Zoë", "José", "Łukasz", "Chloé", "Mateusz", "李", "Ana María", "Søren", "O'Brien", "Nguyễn")
LAST = ("Smith", "Müller", "Kowalski", "García", "Dubois", "王", "Núñez", "Ødegaard", "van der Berg")
CITIES = ("Houston", "Kraków", "São Paulo", "Zürich", "Paris, 11e", "東京", "Reykjavík")
CAMPAIGNS = ("Summer Discounts 20% off", "Welcome, friend", 'Black "Friday"', "Loyalty Ⅱ", "Gift cards")
CHANNELS = ("API", "voucherify-website", "Automation")
MASK = (1 << 64) - 1
# Objects whose records change after creation: each has a history of updates and may be deleted.
HISTORY_OBJECTS = ("order", "customer", "voucher")
# Every change of a record falls within this long after its creation (3 updates of at most 4 days, then a
# deletion within 2 days): the emulator looks this far back for records changed in a window.
HISTORY_SPAN_MS = 15 * DAY_MS
ORDER_STATUSES = ("CREATED", "PAID", "FULFILLED", "CANCELED")


def mix(*parts: int) -> int:
    """splitmix64 over the parts: a fast, well-spread deterministic hash."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & MASK)) * 0xBF58476D1CE4E5B9 & MASK
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & MASK
        x ^= x >> 31
    return x


_SALT = {name: i + 1 for i, name in enumerate(SIZES)}


def tag(h: int, n: int = 6) -> str:
    """``n`` lowercase hex characters of a hash (ids look random but are reproducible)."""
    return f"{h:016x}"[:n]


@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def iso_ms(ms: int) -> str:
    """UTC ISO 8601 with milliseconds, as Voucherify writes timestamps."""
    day, rest = divmod(ms, DAY_MS)
    seconds, millis = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return int(dt.timestamp() * 1000)


@dataclass(frozen=True)
class Dataset:
    """Lazily generated Voucherify data for one seed, scale and date range."""

    seed: int
    scale: int
    start_ms: int
    end_ms: int

    @functools.cached_property
    def _counts(self) -> dict[str, int]:
        return {obj: max(1, round(self.scale * share)) if self.scale > 0 else 0 for obj, share in SIZES.items()}

    def count(self, obj: str) -> int:
        """Number of records of an object."""
        return self._counts[obj]

    # -- time and identity --------------------------------------------------------------------------

    def created_ms(self, obj: str, i: int) -> int:
        """Creation time of record ``i``: evenly spread, snapped onto midnight when it crosses one."""
        n, span = self.count(obj), self.end_ms - self.start_ms
        raw = self.start_ms + i * span // n
        if i > 0:
            midnight = raw - (raw % DAY_MS)
            prev = self.start_ms + (i - 1) * span // n
            if prev < midnight <= raw:
                return midnight
        return raw

    def index_range(self, obj: str, after_ms: int | None, before_ms: int | None,
                    after_inclusive: bool, before_inclusive: bool) -> range:
        """Indexes of records created within the bounds (creation time grows with the index)."""
        n = self.count(obj)
        lo = 0 if after_ms is None else self._first_index(obj, after_ms, strict=not after_inclusive)
        hi = n if before_ms is None else self._first_index(obj, before_ms, strict=before_inclusive)
        return range(lo, max(lo, hi))

    def _first_index(self, obj: str, ms: int, strict: bool) -> int:
        """First index whose time is > ms (strict) or >= ms."""
        lo, hi = 0, self.count(obj)
        while lo < hi:
            mid = (lo + hi) // 2
            t = self.created_ms(obj, mid)
            if t > ms or (not strict and t == ms):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def record_id(self, obj: str, i: int) -> str:
        """Stable id of record ``i``; the index is recoverable from its last 8 hex digits."""
        prefix = "rr_" if obj == "redemption" and self.is_rollback(i) else ID_PREFIX[obj]
        return f"{prefix}{tag(mix(self.seed, _SALT[obj], i, 1))}{i:08x}"

    def index_of(self, obj: str, record_id: str) -> int | None:
        """Index of a record id, or None when it is not one of ours."""
        try:
            i = int(record_id[-8:], 16)
        except ValueError:
            return None
        if 0 <= i < self.count(obj) and self.record_id(obj, i) == record_id:
            return i
        return None

    def voucher_code(self, i: int) -> str:
        """Code of voucher ``i`` (unique)."""
        return f"{tag(mix(self.seed, 99, i), 4).upper()}-{i:06d}"

    # -- redemption outcomes ------------------------------------------------------------------------

    @staticmethod
    def is_rollback(i: int) -> bool:
        """Every 17th redemption record rolls back the one before it."""
        return i % 17 == 16

    @staticmethod
    def is_failure(i: int) -> bool:
        """Some redemptions fail, with one of the documented failure codes."""
        return i % 7 == 3 and i % 17 != 15

    # -- history of mutable records -----------------------------------------------------------------

    @functools.lru_cache(maxsize=1 << 16)  # noqa: B019 -- a frozen dataclass; the cache is per process
    def history(self, obj: str, i: int) -> tuple[tuple[int, ...], int | None]:
        """Update times of record ``i`` (0 to 3, ascending) and its deletion time (None: never deleted).

        Some records change several times within minutes (several changes in one window), some exactly
        at a midnight (a window boundary), some days later; about one in 19 is deleted after its last change.
        """
        if obj not in HISTORY_OBJECTS:
            return (), None
        h = mix(self.seed, _SALT[obj], i, 3)
        moment, times = self.created_ms(obj, i), []
        for j in range(h % 4):
            g = mix(h, j)
            kind, amount = g % 8, g >> 8
            if kind == 0:
                moment = (moment // DAY_MS + 1) * DAY_MS  # exactly on the next midnight
            elif kind < 4:
                moment += (1 + amount % 120) * 60_000  # minutes later
            else:
                moment += 1 + amount % (4 * DAY_MS)  # up to four days later
            times.append(moment)
        deleted = moment + 1 + (h >> 40) % (2 * DAY_MS) if (h >> 16) % 19 == 0 else None
        return tuple(times), deleted

    def exists(self, obj: str, i: int, as_of: int | None = None) -> bool:
        """Whether record ``i`` exists at ``as_of`` (None: now, after all of its history). The clock is
        exclusive, like a window's end: what happens exactly at ``as_of`` has not happened yet."""
        _, deleted = self.history(obj, i)
        if as_of is None:
            return deleted is None
        return self.created_ms(obj, i) < as_of and (deleted is None or deleted >= as_of)

    def updates(self, obj: str, i: int, as_of: int | None = None) -> list[int]:
        """The update times of record ``i`` made before ``as_of`` (None: all of them)."""
        return [t for t in self.history(obj, i)[0] if as_of is None or t < as_of]

    def last_change_ms(self, obj: str, i: int, as_of: int | None = None) -> int:
        """When record ``i`` last changed by ``as_of``: its last visible update, else its creation."""
        updates = self.updates(obj, i, as_of)
        return updates[-1] if updates else self.created_ms(obj, i)

    # -- records ------------------------------------------------------------------------------------

    def row(self, obj: str, i: int, as_of: int | None = None) -> dict[str, Any]:
        """Record ``i`` of ``obj`` as export field values (Python types; money in cents), as it was at
        ``as_of`` (None: now) with the updates made before then applied."""
        h = mix(self.seed, _SALT[obj], i)
        created = self.created_ms(obj, i)
        row: dict[str, Any] = getattr(self, f"_{obj}")(i, h, created)
        if obj in HISTORY_OBJECTS:
            updates = self.updates(obj, i, as_of)
            self._apply_updates(obj, row, h, len(updates))
            row["updated_at"] = updates[-1] if updates else None  # null until the first change
        return row

    @staticmethod
    def _apply_updates(obj: str, row: dict[str, Any], h: int, count: int) -> None:
        """What ``count`` updates changed: visible values, so each version of a record differs."""
        if not count:
            return
        if obj == "order":
            row["status"] = ORDER_STATUSES[(h + count) % len(ORDER_STATUSES)]
            row["amount"] += 250 * count
            row["total_amount"] = row["amount"] - row["discount_amount"]
        elif obj == "customer":
            row["loyalty_points"] += 10 * count
            row["address_city"] = CITIES[(h + count) % len(CITIES)]
        else:
            row["redemption_count"] += count
            row["active"] = row["active"] != (count % 2 == 1)

    def rows(self, obj: str, indexes: range) -> Iterator[dict[str, Any]]:
        """Records at the given indexes, in index order."""
        for i in indexes:
            yield self.row(obj, i)

    def _customer_ref(self, h: int) -> int:
        return (h >> 20) % self.count("customer")

    def _voucher_ref(self, h: int) -> int:
        return (h >> 30) % self.count("voucher")

    def _name(self, h: int) -> str:
        return f"{FIRST[h % len(FIRST)]} {LAST[(h >> 8) % len(LAST)]}"

    def _metadata(self, h: int) -> dict[str, Any]:
        meta: dict[str, Any] = {"tier": ("gold", "silver", "bronze")[h % 3], "score": (h >> 4) % 1000}
        if h % 5 == 0:
            meta["note"] = 'line one\nline "two", with comma'
        if h % 7 == 0:
            meta["tags"] = ["ünïcödé", "a,b"]
        return meta

    def _redemption(self, i: int, h: int, created: int) -> dict[str, Any]:
        rollback = self.is_rollback(i)
        failed = self.is_failure(i)
        target = i - 1 if rollback else i
        th = mix(self.seed, _SALT["redemption"], target)
        cust = self._customer_ref(th)
        code = self.voucher_code(self._voucher_ref(th))
        return {
            "id": self.record_id("redemption", i),
            "object": "redemption_rollback" if rollback else "redemption",
            "date": created,
            "voucher_code": code,
            "campaign": CAMPAIGNS[th % len(CAMPAIGNS)],
            "promotion_tier_id": None,
            "customer_id": self.record_id("customer", cust),
            "customer_source_id": f"src-{cust}@example.com",
            "customer_name": self._name(mix(self.seed, _SALT["customer"], cust)),
            "tracking_id": f"track_{tag(th, 10)}",
            "order_id": self.record_id("order", target % self.count("order")),
            "order_amount": (th % 50_000) + 100,
            "gift_amount": (th >> 12) % 2000 if th % 3 == 0 else None,
            "loyalty_points": (th >> 16) % 500 if th % 4 == 0 else None,
            "result": "FAILURE" if failed else "SUCCESS",
            "failure_code": FAILURE_CODES[h % len(FAILURE_CODES)] if failed else None,
            "failure_message": f"Redemption failed: {FAILURE_CODES[h % len(FAILURE_CODES)]}, \"see\" docs"
            if failed else None,
            "metadata": self._metadata(h),
            # not export fields: used by the JSON API
            "_rolled_back": self.is_rollback(i + 1) and not rollback,
            "_target": self.record_id("redemption", target) if rollback else None,
        }

    def _customer(self, i: int, h: int, created: int) -> dict[str, Any]:
        name = self._name(h)
        return {
            "name": name, "id": self.record_id("customer", i), "description": f"Customer {i}, \"VIP\"\nsince {i % 9}"
            if h % 4 == 0 else None,
            "email": f"src-{i}@example.com", "source_id": f"src-{i}@example.com", "created_at": created,
            "address_city": CITIES[h % len(CITIES)], "address_state": None,
            "address_line_1": f"{h % 999} Main St, Apt {i % 40}",
            "address_line_2": None, "address_country": "Poland", "address_postal_code": f"{h % 99999:05d}",
            "redemptions_total_redeemed": h % 9, "redemptions_total_failed": h % 2,
            "redemptions_total_succeeded": h % 7,
            "redemptions_total_rolled_back": 0, "redemptions_total_rollback_failed": 0,
            "redemptions_total_rollback_succeeded": 0, "orders_total_amount": h % 1_000_000,
            "orders_total_count": h % 12, "orders_average_amount": h % 50_000, "orders_last_order_amount": h % 40_000,
            "orders_last_order_date": created + (h % 5) * 3_600_000, "loyalty_points": h % 3000,
            "loyalty_referred_customers": h % 4, "updated_at": created + (h % 10) * 60_000,
            "phone": f"+48 {h % 1_000_000_000:09d}", "birthday": None,
            "metadata": self._metadata(h), "birthdate": date(1950 + h % 50, 1 + h % 12, 1 + h % 28),
        }

    def _voucher(self, i: int, h: int, created: int) -> dict[str, Any]:
        vtype = ("DISCOUNT_VOUCHER", "GIFT_VOUCHER", "LOYALTY_CARD")[h % 3]
        dtype = ("AMOUNT", "PERCENT", "UNIT", "FIXED")[h % 4] if vtype == "DISCOUNT_VOUCHER" else None
        cust = self._customer_ref(h)
        # A voucher's value counts what its type says: percent, units, else the minor currency unit.
        value = {"PERCENT": 5 + h % 46, "UNIT": 1 + h % 3}.get(dtype or "", (h % 500) * 100)
        return {
            "code": self.voucher_code(i), "voucher_type": vtype,
            "value": value if vtype != "LOYALTY_CARD" else 0, "formula": None,
            "discount_type": dtype,
            "campaign": CAMPAIGNS[h % len(CAMPAIGNS)], "category": None,
            "start_date": created, "expiration_date": created + 90 * DAY_MS,
            "gift_balance": (h % 300) * 100 if vtype == "GIFT_VOUCHER" else None,
            "loyalty_balance": h % 5000 if vtype == "LOYALTY_CARD" else None,
            "redemption_quantity": (h % 5) or None, "redemption_count": h % 3, "active": h % 10 != 0,
            "qr_code": f"https://dl.voucherify.io/api/v1/assets/qr/{tag(h, 12)}", "bar_code": None,
            "metadata": self._metadata(h), "id": self.record_id("voucher", i), "is_referral_code": h % 11 == 0,
            "created_at": created, "updated_at": created + (h % 100) * 1000,
            "validity_timeframe_interval": None, "validity_timeframe_duration": None,
            "validity_day_of_week": "1,2,3,4,5" if h % 6 == 0 else None, "discount_amount_limit": None,
            "campaign_id": f"camp_{tag(h % 5, 8)}", "additional_info": 'Extra, "quoted"\ninfo' if h % 8 == 0 else None,
            "customer_id": self.record_id("customer", cust), "discount_effect": None, "discount_unit_type": None,
            "discount_unit_effect": None, "validation_rules_id": None, "customer_source_id": f"src-{cust}@example.com",
        }

    def _publication(self, i: int, h: int, created: int) -> dict[str, Any]:
        cust = self._customer_ref(h)
        code = self.voucher_code(self._voucher_ref(h))
        return {
            "code": code, "voucher_code": code, "customer_id": self.record_id("customer", cust),
            "customer_source_id": f"src-{cust}@example.com", "date": created, "channel": CHANNELS[h % 3],
            "campaign": CAMPAIGNS[h % len(CAMPAIGNS)], "is_winner": h % 13 == 0, "metadata": self._metadata(h),
            "_id": self.record_id("publication", i),
        }

    def _order(self, i: int, h: int, created: int) -> dict[str, Any]:
        amount = (h % 90_000) + 1000
        discount = amount // 10 if h % 2 else 0
        return {
            "id": self.record_id("order", i), "source_id": f"order-{i}", "created_at": created,
            "updated_at": created + (h % 3600) * 1000, "status": ("CREATED", "PAID", "FULFILLED", "CANCELED")[h % 4],
            "amount": amount, "discount_amount": discount, "items_discount_amount": 0,
            "total_discount_amount": discount, "total_amount": amount - discount,
            "customer_id": self.record_id("customer", self._customer_ref(h)),
            "referrer_id": self.record_id("customer", (h >> 7) % self.count("customer")) if h % 9 == 0 else None,
            "metadata": self._metadata(h),
        }

    def _points_expiration(self, i: int, h: int, created: int) -> dict[str, Any]:
        expires = datetime.fromtimestamp((created + 180 * DAY_MS) / 1000, tz=timezone.utc).date()
        return {
            "id": self.record_id("points_expiration", i), "campaign_id": f"camp_{tag(h % 5, 8)}",
            "voucher_id": self.record_id("voucher", self._voucher_ref(h)), "points": (h % 100) * 10 + 10,
            "status": "ACTIVE" if h % 4 else "INACTIVE", "expires_at": expires,
        }

    def _voucher_transactions(self, i: int, h: int, created: int) -> dict[str, Any]:
        kind = ("CREDITS_REDEMPTION", "CREDITS_ADDITION", "POINTS_ACCRUAL", "POINTS_REDEMPTION")[h % 4]
        amount = (h % 5000) * (-1 if kind.endswith("REDEMPTION") else 1)
        return {
            "id": self.record_id("voucher_transactions", i), "campaign_id": f"camp_{tag(h % 5, 8)}",
            "voucher_id": self.record_id("voucher", self._voucher_ref(h)), "type": kind,
            "source_id": f"tx-{i}" if h % 2 else None, "status": "SUCCESS",
            "reason": "manual, \"adjustment\"" if h % 10 == 0 else None, "source": CHANNELS[h % 3],
            "balance": h % 100_000, "amount": amount, "related_transaction_id": None, "created_at": created,
            "details": {"balance": {"type": "gift_voucher", "total": h % 100_000}, "event": {"name": kind.lower()}},
        }


def render_value(value: Any, kind: str, money_format: str) -> str:
    """One CSV cell as Voucherify writes it (API_NOTES section 5)."""
    if value is None:
        return ""
    if kind == "timestamp":
        return iso_ms(value)
    if kind == "money":  # the integer in the smallest currency unit, as the export docs show it (7700, 2000.00)
        return str(value) if money_format == "minimal" else f"{value}.00"
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def render_row(row: dict[str, Any], fields: list[str], kinds: list[str], money_format: str) -> list[str]:
    """A record's CSV cells for ``fields`` (of logical types ``kinds``), as Voucherify writes them."""
    return [render_value(field_value(row, f), k, money_format) for f, k in zip(fields, kinds, strict=True)]


def field_value(row: dict[str, Any], key: str) -> Any:
    """A row's value for an export field, including one ``metadata.X`` property."""
    if key.startswith("metadata.") and key not in row:
        meta = row.get("metadata") or {}
        value = meta.get(key[len("metadata."):])
        return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return row.get(key)


assert set(SIZES) == set(OBJECTS), "every exportable object needs a generator"
