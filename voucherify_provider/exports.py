"""What an export is to every part of the provider: its statuses, its validated parameters, how waiting
for it slows down.

Import-light (no HTTP client, no pyarrow): operators, the sensor and the trigger import it at DAG-parse
time or in the triggerer, and both hooks build their requests from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from voucherify_provider import catalog


class ExportStatus(str, Enum):
    """Statuses of a Voucherify export."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"
    ERROR = "ERROR"

    @classmethod
    def terminal(cls) -> frozenset[ExportStatus]:
        """Statuses after which the export never changes."""
        return frozenset({cls.DONE, cls.ERROR})

    @classmethod
    def active(cls) -> frozenset[ExportStatus]:
        """Statuses of an export still being generated (a retry can reconnect to it)."""
        return frozenset({cls.SCHEDULED, cls.IN_PROGRESS})


def export_parameters(
    obj: catalog.ExportedObject,
    fields: Sequence[str] | None,
    order: str | None,
    filters: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Validated ``parameters`` of an export request (fields, order and filters checked against the catalog)."""
    params: dict[str, Any] = {}
    if order is not None:
        params["order"] = obj.validate_order(order)
    if fields is not None:
        params["fields"] = list(obj.validate_fields(fields))
    if filters is not None:
        params["filters"] = obj.validate_filters(filters)
    return params


def is_request_of(export: Mapping[str, Any], exported_object: str, parameters: Mapping[str, Any]) -> bool:
    """Whether ``export`` (as the API lists it) was made by a request for ``exported_object`` with exactly
    these ``parameters`` (:func:`export_parameters`' form): how a retry recognises an export whose id
    its earlier try never recorded."""
    echoed = export.get("parameters") or {}
    keys = ("order", "fields", "filters")
    return (export.get("exported_object") == exported_object
            and {k: echoed.get(k) for k in keys} == {k: parameters.get(k) for k in keys})


def next_interval(current: float, cap: float) -> float:
    """Poll interval growth: doubling towards ``cap``, so an export of any length costs a few calls (a
    wait of T seconds takes about log2(T / first interval) polls)."""
    return min(cap, max(current * 2.0, current + 1.0))


class ExportDescription:
    """An export as the API returns it, read back: what it exports, which fields, which window.

    The landing trusts the export, not its own arguments: the filters Voucherify recorded say whether it
    is a created_at window, a change window (created or updated in the window) or a snapshot.
    """

    def __init__(self, export: Mapping[str, Any]) -> None:
        self.raw = export
        self.status = export.get("status")
        self.exported_object = export.get("exported_object")
        parameters = export.get("parameters") or {}
        self.fields: list[str] | None = list(parameters["fields"]) if parameters.get("fields") else None
        self.filters: dict[str, Any] = dict(parameters.get("filters") or {})

    @property
    def created_at_conditions(self) -> dict[str, Any]:
        """The ``created_at`` filter's conditions (``$after``/``$before`` lists), empty for a snapshot."""
        return dict((self.filters.get("created_at") or {}).get("conditions") or {})

    @property
    def windowed(self) -> bool:
        """An export filtered on created_at is a window; any other is a snapshot."""
        return bool(self.created_at_conditions)

    def created_at_bounds(self) -> tuple[str | None, str | None]:
        """The ``$after`` and ``$before`` instants the export was created with."""
        conditions = self.created_at_conditions
        return (conditions.get("$after") or [None])[0], (conditions.get("$before") or [None])[0]

    def is_change_window(self, obj: catalog.ExportedObject) -> bool:
        """A window of the records created or updated in it (``incremental=True``); never a snapshot, whatever
        its own filters."""
        return (self.windowed and bool(obj.updated_field) and self.filters.get("junction") == "or"
                and obj.updated_field in self.filters)
