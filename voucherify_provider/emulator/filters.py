"""Export ``filters`` as Voucherify reads them: a junction over per-field conditions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from voucherify_provider.emulator.dataset import field_value, to_ms

OPERATORS = (
    "$in", "$not_in", "$is", "$is_not", "$has_value", "$is_unknown", "$contains", "$not_contain",
    "$starts_with", "$ends_with", "$more_than", "$less_than", "$more_than_equal", "$less_than_equal",
    "$after", "$before",
)
TIME_FIELDS = ("created_at", "updated_at", "date", "expires_at")


class FilterError(ValueError):
    """A filter the API would reject with 400."""


def parse_time(value: Any) -> int:
    """Milliseconds of an ISO 8601 date or date-time filter value."""
    text = str(value)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"Invalid date value {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return to_ms(parsed)


def _values(raw: Any) -> list[Any]:
    return list(raw) if isinstance(raw, list) else [raw]


Condition = Callable[[dict[str, Any]], bool]


def _condition(key: str, op: str, raw: Any, bounds: tuple[bool, bool], created_field: str | None) -> Condition:
    values = _values(raw)
    after_inclusive, before_inclusive = bounds
    source = created_field if key == "created_at" and created_field else key

    def get(row: dict[str, Any]) -> Any:
        return field_value(row, source)

    if op in ("$after", "$before"):
        if not values:
            raise FilterError(f"{key}.{op} needs a date")
        limit = parse_time(values[0])
        if op == "$after":
            return lambda r: get(r) is not None and (get(r) >= limit if after_inclusive else get(r) > limit)
        return lambda r: get(r) is not None and (get(r) <= limit if before_inclusive else get(r) < limit)
    if op in ("$more_than", "$less_than", "$more_than_equal", "$less_than_equal"):
        bound: float = parse_time(values[0]) if key in TIME_FIELDS else float(values[0])
        cmp = {"$more_than": lambda a: a > bound, "$less_than": lambda a: a < bound,
               "$more_than_equal": lambda a: a >= bound, "$less_than_equal": lambda a: a <= bound}[op]
        return lambda r: get(r) is not None and cmp(get(r))
    text = [str(v) for v in values]
    simple: dict[str, Condition] = {
        "$in": lambda r: str(get(r)) in text,
        "$is": lambda r: str(get(r)) in text,
        "$not_in": lambda r: str(get(r)) not in text,
        "$is_not": lambda r: str(get(r)) not in text,
        "$has_value": lambda r: get(r) not in (None, ""),
        "$is_unknown": lambda r: get(r) in (None, ""),
        "$contains": lambda r: any(t in str(get(r) or "") for t in text),
        "$not_contain": lambda r: not any(t in str(get(r) or "") for t in text),
        "$starts_with": lambda r: any(str(get(r) or "").startswith(t) for t in text),
        "$ends_with": lambda r: any(str(get(r) or "").endswith(t) for t in text),
    }
    return simple[op]


def _all_of(conditions: list[Condition]) -> Condition:
    held = tuple(conditions)
    return lambda r: all(c(r) for c in held)


def compile_filters(
    filters: dict[str, Any] | None,
    allowed_fields: set[str],
    created_field: str | None,
    bounds: tuple[bool, bool],
    or_per_condition: bool = False,
) -> tuple[Condition | None, tuple[int | None, int | None]]:
    """Compile filters into a row predicate plus the created_at window (ms) usable as an index range.

    The window is returned only for an ``and`` junction, where it bounds every matching row. Under ``or``,
    a field's conditions hold together and the fields are or-ed, unless ``or_per_condition`` (any single
    condition is enough; see the ``or_junction`` setting).
    """
    if not filters:
        return None, (None, None)
    if not isinstance(filters, dict):
        raise FilterError("filters must be an object")
    junction = filters.get("junction", "and")
    if junction not in ("and", "or"):
        raise FilterError(f"Property .filters.junction should be one of [and, or], got {junction!r}")
    conditions: list[Condition] = []
    per_field: list[Condition] = []
    after = before = None
    for key, spec in filters.items():
        if key == "junction":
            continue
        if key != "created_at" and key not in allowed_fields and not key.startswith("metadata."):
            raise FilterError(f"Unsupported filter field {key!r}")
        if not isinstance(spec, dict) or not isinstance(spec.get("conditions"), dict):
            raise FilterError(f"Property .filters.{key} should have an object 'conditions'")
        field_conditions: list[Condition] = []
        for op, raw in spec["conditions"].items():
            if op not in OPERATORS:
                raise FilterError(f"Unsupported operator {op!r} in filters.{key}; allowed: {', '.join(OPERATORS)}")
            field_conditions.append(_condition(key, op, raw, bounds, created_field))
            if key == "created_at" and op == "$after":
                after = parse_time(_values(raw)[0])
            if key == "created_at" and op == "$before":
                before = parse_time(_values(raw)[0])
        conditions.extend(field_conditions)
        per_field.append(_all_of(field_conditions))
    if not conditions:
        return None, (None, None)
    if junction == "or":
        alternatives = conditions if or_per_condition else per_field
        return (lambda r: any(c(r) for c in alternatives)), (None, None)
    return (lambda r: all(c(r) for c in conditions)), (after, before)
