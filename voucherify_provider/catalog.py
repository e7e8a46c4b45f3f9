"""The one catalog of exportable Voucherify objects and their fields.

Everything that needs to know about an exported object reads it from here: the hook and operators
(validation, defaults, window filters), the Parquet writer (column types) and the emulator (what to
generate and how to label CSV columns). Field lists are the union of the seed documents and the
``Export<Object>Fields`` enums of Voucherify's OpenAPI spec (API_NOTES section 3).

Import-light on purpose (no pyarrow): DAG files import this through the operators.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class FieldType(str, Enum):
    """Logical column type; the Parquet writer maps each to an Arrow type."""

    STRING = "string"
    TIMESTAMP = "timestamp"  # UTC ISO 8601 with milliseconds
    DATE = "date"
    MONEY = "money"  # amounts in the smallest currency unit (see MINOR_UNIT); "2000" and "2000.00" both accepted
    INTEGER = "integer"
    BOOLEAN = "boolean"
    JSON = "json"  # kept as JSON text


S, TS, D, M, N, B, J = (
    FieldType.STRING,
    FieldType.TIMESTAMP,
    FieldType.DATE,
    FieldType.MONEY,
    FieldType.INTEGER,
    FieldType.BOOLEAN,
    FieldType.JSON,
)

# Voucherify's amounts are integers in the smallest currency unit: an order's ``amount`` 7700 is $77.00,
# a customer's ``orders_total_amount`` 10000 "represents $100" ("value is multiplied by 100"), a $20 gift
# card's ``value`` prints as 2000.00. The landing keeps the number exactly as the API gives it.
MINOR_UNIT = "minor currency unit (cents): 7700 is 77.00 in the account's currency"
# A voucher's ``value`` depends on its type (the export docs: amount, percent or unit).
VOUCHER_VALUE_UNIT = ("per voucher_type/discount_type: AMOUNT discounts and gift cards in the minor currency "
                      "unit (2000 is 20.00), PERCENT in percent, UNIT in units")

METADATA_PREFIX = "metadata."
# Condition operators of the API's FiltersCondition schema (exports.json).
FILTER_OPERATORS = (
    "$in", "$not_in", "$is", "$is_not", "$has_value", "$is_unknown", "$contains", "$not_contain",
    "$starts_with", "$ends_with", "$more_than", "$less_than", "$more_than_equal", "$less_than_equal",
    "$after", "$before", "$count", "$count_less", "$count_more", "$is_days_ago", "$is_days_in_future",
    "$less_than_ago", "$less_than_future", "$more_than_ago", "$more_than_future",
)
# Timestamps every object can be filtered on, whether or not they are export columns.
TIME_FILTER_KEYS = ("created_at", "updated_at")


@dataclass(frozen=True)
class ExportedObject:
    """What Voucherify lets you export for one object type."""

    name: str
    fields: dict[str, FieldType]
    default_fields: tuple[str, ...]
    order_values: tuple[str, ...]
    # CSV column holding the record's creation time (redemptions and publications call it ``date``).
    created_field: str | None
    # Filter key carrying created_at windows; None when the API cannot window this object.
    window_filter: str | None
    # Records change after creation, so created_at windows alone miss updates: offer snapshots.
    mutable: bool = False
    # Field (and filter key) of the last change; set where the API filters on it, which makes change
    # windows possible: records created or updated in a window (``incremental``).
    updated_field: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # Fields holding personal data, each with the column policy the provider suggests for it
    # (``PERSONAL_DATA``): identifiers people are matched on are hashed, so joins keep working; free text,
    # addresses and birthdates are dropped.
    personal: dict[str, str] = field(default_factory=dict)
    # The field naming the customer a record belongs to (erasure requests name customers).
    customer_field: str | None = None

    @property
    def windowable(self) -> bool:
        """Whether created_at windows can be requested for this object."""
        return self.window_filter is not None

    @property
    def incremental(self) -> bool:
        """Whether change windows (records created or updated in a window) can be exported."""
        return self.windowable and self.updated_field is not None

    @property
    def key_field(self) -> str:
        """The field identifying a record across its versions (the current-state table's merge key)."""
        return "id" if "id" in self.fields else "code"

    @property
    def distinct_fields(self) -> tuple[str, ...]:
        """Fields whose value differs on every record (the key, and codes or source ids the API keeps unique):
        a Parquet dictionary of them is as large as the column, so the writer stores them plain."""
        return (self.key_field, *(f for f in DISTINCT_FIELDS.get(self.name, ()) if f != self.key_field))

    @property
    def allowed_orders(self) -> tuple[str, ...]:
        """Every accepted ``order`` value, ascending and descending."""
        return tuple(v for base in self.order_values for v in (base, f"-{base}"))

    def is_personal(self, key: str) -> bool:
        """Whether a field may hold personal data: listed as such, or free-form (metadata, JSON details)."""
        return key in self.personal or key.startswith(METADATA_PREFIX) or self.fields.get(key) is FieldType.JSON

    @property
    def placing_fields(self) -> tuple[str, ...]:
        """Fields the landing and the current-state table need as they are: the key and the time fields."""
        return tuple(f for f in (self.key_field, self.created_field, self.updated_field) if f)

    def field_type(self, key: str) -> FieldType:
        """Type of a requested field; ``metadata.X`` values are strings (unknown schema)."""
        if key in self.fields:
            return self.fields[key]
        if key.startswith(METADATA_PREFIX) and len(key) > len(METADATA_PREFIX):
            return FieldType.STRING
        raise UnknownFieldError(self, key)

    def unit(self, key: str) -> str | None:
        """What a field's number counts: the minor currency unit for amounts, None for non-money fields."""
        if self.field_type(key) is not FieldType.MONEY:
            return None
        return VOUCHER_VALUE_UNIT if (self.name, key) == ("voucher", "value") else MINOR_UNIT

    def is_allowed_field(self, key: str) -> bool:
        """True for a listed field or a single ``metadata.X`` property."""
        return key in self.fields or (key.startswith(METADATA_PREFIX) and len(key) > len(METADATA_PREFIX))

    def validate_fields(self, keys: Sequence[str]) -> tuple[str, ...]:
        """Check requested fields, naming the first unknown one and the allowed set."""
        if isinstance(keys, str):
            raise CatalogError(f"fields must be a list of field names, got the string {keys!r}; "
                               f"write {[k.strip() for k in keys.split(',')]!r}.")
        keys = tuple(keys)
        if not keys:
            raise CatalogError(f"fields for {self.name!r} is empty; omit it to export the default fields.")
        for key in keys:
            if not isinstance(key, str) or not self.is_allowed_field(key):
                raise UnknownFieldError(self, key)
        dupes = sorted({k for k in keys if list(keys).count(k) > 1})
        if dupes:
            raise CatalogError(f"fields for {self.name!r} repeat {', '.join(dupes)}; list each field once.")
        return tuple(keys)

    def validate_filters(self, filters: Any) -> dict[str, Any]:
        """Check ``filters``: its shape, the junction, each key a field of the object, each operator known."""
        if not isinstance(filters, Mapping):
            raise CatalogError("filters must be a mapping like {'result': {'conditions': {'$in': ['SUCCESS']}}}, "
                               f"got {type(filters).__name__}.")
        for key, spec in filters.items():
            if key == "junction":
                if spec not in ("and", "or"):
                    raise CatalogError(f"filters junction must be 'and' or 'or', got {spec!r}.")
                continue
            if not (self.is_allowed_field(key) or key in TIME_FILTER_KEYS or key == self.window_filter):
                raise CatalogError(f"filters: {UnknownFieldError(self, key)}")
            conditions = spec.get("conditions") if isinstance(spec, Mapping) else None
            if not isinstance(conditions, Mapping) or not conditions:
                raise CatalogError(f"filters[{key!r}] must look like {{'conditions': {{'$in': [...]}}}}; got {spec!r}.")
            for op in conditions:
                if op not in FILTER_OPERATORS:
                    close = difflib.get_close_matches(str(op), FILTER_OPERATORS, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise CatalogError(f"filters[{key!r}] uses unknown operator {op!r}.{hint} "
                                       f"Allowed: {', '.join(FILTER_OPERATORS)}.")
        return dict(filters)

    def validate_order(self, order: str) -> str:
        """Check an ``order`` value against the object's allowed sort keys."""
        if order not in self.allowed_orders:
            raise CatalogError(
                f"order {order!r} is not allowed for {self.name!r}; "
                f"allowed: {', '.join(self.allowed_orders)}."
            )
        return order

    def label(self, key: str) -> str:
        """Human-readable CSV header the API writes for a field (headers are labels, not keys)."""
        if key in self.labels:
            return self.labels[key]
        if key.startswith(METADATA_PREFIX):
            return f"Metadata {key[len(METADATA_PREFIX):]}"
        words = key.split("_")
        return " ".join("ID" if w == "id" else "QR" if w == "qr" else w.capitalize() for w in words)


class CatalogError(ValueError):
    """A requested object, field or order is not something Voucherify can export."""


class UnknownFieldError(CatalogError):
    """A requested field is not exportable for the object."""

    def __init__(self, obj: ExportedObject, key: object) -> None:
        allowed = sorted(obj.fields)
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(
            f"Unknown field {key!r} for exported object {obj.name!r}.{hint} "
            f"Allowed fields: {', '.join(allowed)}, or metadata.<property> for one metadata property."
        )
        self.field = key


HASH, DROP = "hash", "drop"
# Personal data per object, and the suggested policy (see ``ExportedObject.personal``). Customers'
# ``source_id`` is often their email, and other objects carry it as ``customer_source_id``: hashed alike,
# they still join. ``metadata`` is free-form and may hold anything; it is not in the list (it usually
# holds business data), but its values are never quoted in messages.
PERSONAL_DATA: dict[str, dict[str, str]] = {
    "customer": {"name": HASH, "email": HASH, "phone": HASH, "source_id": HASH, "description": DROP,
                 "address_line_1": DROP, "address_line_2": DROP, "address_postal_code": DROP,
                 "birthday": DROP, "birthdate": DROP},
    "redemption": {"customer_name": HASH, "customer_source_id": HASH},
    "publication": {"customer_source_id": HASH},
    "voucher": {"customer_source_id": HASH, "additional_info": DROP},
    "order": {},
    "points_expiration": {},
    "voucher_transactions": {},
}

# Besides the key: values Voucherify keeps unique per record (a voucher's code, a customer's or an
# order's source_id), so the dictionary a Parquet writer tries on them never pays.
DISTINCT_FIELDS: dict[str, tuple[str, ...]] = {
    "voucher": ("code",),
    "customer": ("source_id",),
    "order": ("source_id",),
}


def _obj(name: str, fields: dict[str, FieldType], defaults: tuple[str, ...], orders: tuple[str, ...],
         created: str | None, window: str | None, mutable: bool = False,
         updated: str | None = None, customer: str | None = None) -> ExportedObject:
    missing = [f for f in defaults if f not in fields]
    assert not missing, f"defaults of {name} not in its fields: {missing}"
    assert updated is None or fields.get(updated) == TS, f"{name}: {updated} must be a timestamp field"
    personal = PERSONAL_DATA[name]
    assert set(personal) <= set(fields), f"{name}: personal fields not in its fields: {set(personal) - set(fields)}"
    assert customer is None or customer in fields, f"{name}: {customer} is not a field"
    assert set(DISTINCT_FIELDS.get(name, ())) <= set(fields), f"{name}: distinct fields not in its fields"
    return ExportedObject(name, fields, defaults, orders, created, window, mutable, updated,
                          personal=dict(personal), customer_field=customer)


OBJECTS: dict[str, ExportedObject] = {
    o.name: o
    for o in (
        _obj(
            "order",
            {"id": S, "source_id": S, "created_at": TS, "updated_at": TS, "status": S, "amount": M,
             "discount_amount": M, "items_discount_amount": M, "total_discount_amount": M,
             "total_amount": M, "customer_id": S, "referrer_id": S, "metadata": J},
            ("id", "source_id", "status"),
            ("created_at", "updated_at", "status"),
            created="created_at", window="created_at", mutable=True, updated="updated_at", customer="customer_id",
        ),
        _obj(
            "voucher",
            {"code": S, "voucher_type": S, "value": M, "formula": S, "discount_type": S, "campaign": S,
             "category": S, "start_date": TS, "expiration_date": TS, "gift_balance": M,
             "loyalty_balance": N, "redemption_quantity": N, "redemption_count": N, "active": B,
             "qr_code": S, "bar_code": S, "metadata": J, "id": S, "is_referral_code": B,
             "created_at": TS, "updated_at": TS, "validity_timeframe_interval": S,
             "validity_timeframe_duration": S, "validity_day_of_week": S, "discount_amount_limit": M,
             "campaign_id": S, "additional_info": S, "customer_id": S, "discount_effect": S,
             "discount_unit_type": S, "discount_unit_effect": S, "validation_rules_id": S,
             "customer_source_id": S},
            ("code", "voucher_type", "value", "discount_type"),
            ("created_at", "updated_at", "code"),
            created="created_at", window="created_at", mutable=True, updated="updated_at", customer="customer_id",
        ),
        _obj(
            "publication",
            # ``code`` is a documented default although the field enum lacks it (API_NOTES section 3).
            {"code": S, "voucher_code": S, "customer_id": S, "customer_source_id": S, "date": TS,
             "channel": S, "campaign": S, "is_winner": B, "metadata": J},
            ("code", "customer_id", "date", "channel"),
            ("id", "voucher_code", "tracking_id", "customer_id", "created_at", "channel"),
            created="date", window="created_at", customer="customer_id",
        ),
        _obj(
            "redemption",
            {"id": S, "object": S, "date": TS, "voucher_code": S, "campaign": S, "promotion_tier_id": S,
             "customer_id": S, "customer_source_id": S, "customer_name": S, "tracking_id": S,
             "order_id": S, "order_amount": M, "gift_amount": M, "loyalty_points": N, "result": S,
             "failure_code": S, "failure_message": S, "metadata": J},
            ("id", "object", "voucher_code", "customer_id", "date", "result"),
            ("id", "voucher_code", "tracking_id", "customer_id", "created_at"),
            created="date", window="created_at", customer="customer_id",
        ),
        _obj(
            "customer",
            {"name": S, "id": S, "description": S, "email": S, "source_id": S, "created_at": TS,
             "address_city": S, "address_state": S, "address_line_1": S, "address_line_2": S,
             "address_country": S, "address_postal_code": S, "redemptions_total_redeemed": N,
             "redemptions_total_failed": N, "redemptions_total_succeeded": N,
             "redemptions_total_rolled_back": N, "redemptions_total_rollback_failed": N,
             "redemptions_total_rollback_succeeded": N, "orders_total_amount": M,
             "orders_total_count": N, "orders_average_amount": M, "orders_last_order_amount": M,
             "orders_last_order_date": TS, "loyalty_points": N, "loyalty_referred_customers": N,
             "updated_at": TS, "phone": S, "birthday": D, "metadata": J, "birthdate": D},
            ("name", "source_id"),
            ("name", "id", "email", "source_id", "created_at", "updated_at"),
            created="created_at", window="created_at", mutable=True, updated="updated_at", customer="id",
        ),
        _obj(
            "points_expiration",
            {"id": S, "campaign_id": S, "voucher_id": S, "points": N, "status": S, "expires_at": D},
            ("id", "campaign_id", "voucher_id", "status", "expires_at", "points"),
            ("expires_at",),
            created=None, window=None, mutable=True,
        ),
        _obj(
            "voucher_transactions",
            # ``status`` is a documented default although the field enum lacks it (API_NOTES section 3).
            {"id": S, "campaign_id": S, "voucher_id": S, "type": S, "source_id": S, "status": S,
             "reason": S, "source": S, "balance": M, "amount": M, "related_transaction_id": S,
             "created_at": TS, "details": J},
            ("id", "type", "source_id", "status", "reason", "source", "balance", "amount", "created_at"),
            ("created_at",),
            created="created_at", window="created_at",
        ),
    )
}


def get_object(name: str) -> ExportedObject:
    """Look up an exported object by name, with an error listing the valid names."""
    try:
        return OBJECTS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(OBJECTS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CatalogError(
            f"Unknown exported object {name!r}.{hint} Allowed: {', '.join(OBJECTS)}."
        ) from None
