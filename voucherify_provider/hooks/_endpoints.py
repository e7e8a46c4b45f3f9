"""Every Voucherify endpoint the provider calls, described once as an :class:`ApiRequest`.

Both hooks send these; neither builds paths or bodies of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from voucherify_provider import catalog
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.exports import export_parameters
from voucherify_provider.hooks._core import ApiRequest
from voucherify_provider.utc import iso_utc

MAX_PAGE_SIZE = 100
MAX_ORDERS_PER_IMPORT = 2000


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise VoucherifyConfigError(f"{what} must be a non-empty string, got {value!r}.")
    return quote(value, safe="")


def _page_params(limit: int, page: int, order: str | None) -> list[tuple[str, str]]:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise VoucherifyConfigError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}.")
    params = [("limit", str(limit)), ("page", str(page))]
    if order:
        params.append(("order", order))
    return params


def create_export(
    exported_object: str,
    fields: Sequence[str] | None = None,
    order: str | None = None,
    filters: Mapping[str, Any] | None = None,
    *,
    retry_safe: bool = False,
) -> ApiRequest:
    """``POST /v1/exports``."""
    obj = catalog.get_object(exported_object)
    body: dict[str, Any] = {"exported_object": obj.name}
    params = export_parameters(obj, fields, order, filters)
    if params:
        body["parameters"] = params
    return ApiRequest("create_export", "POST", "/v1/exports", json=body, idempotent=retry_safe)


def create_orders_export(
    fields: Sequence[str] | None = None,
    order: str | None = None,
    filters: Mapping[str, Any] | None = None,
    *,
    retry_safe: bool = False,
) -> ApiRequest:
    """``POST /v1/orders/export`` (``{}`` exports the default fields)."""
    params = export_parameters(catalog.get_object("order"), fields, order, filters)
    body = {"parameters": params} if params else {}
    return ApiRequest("create_orders_export", "POST", "/v1/orders/export", json=body, idempotent=retry_safe)


def get_export(export_id: str) -> ApiRequest:
    """``GET /v1/exports/{exportId}``."""
    return ApiRequest("get_export", "GET", f"/v1/exports/{_segment(export_id, 'export_id')}")


def delete_export(export_id: str) -> ApiRequest:
    """``DELETE /v1/exports/{exportId}`` (idempotent: a repeat answers 404, handled by the caller)."""
    return ApiRequest("delete_export", "DELETE", f"/v1/exports/{_segment(export_id, 'export_id')}")


def list_exports(limit: int, page: int, order: str | None) -> ApiRequest:
    """``GET /v1/exports``."""
    if order is not None and order not in ("created_at", "-created_at", "status", "-status"):
        raise VoucherifyConfigError(
            f"order {order!r} is not allowed for exports; allowed: created_at, -created_at, status, -status."
        )
    return ApiRequest("list_exports", "GET", "/v1/exports", params=_page_params(limit, page, order))


def create_order(order: Mapping[str, Any], *, retry_safe: bool | None = None) -> ApiRequest:
    """``POST /v1/orders``: an upsert, so resending is safe when the order names its id or source_id."""
    if not isinstance(order, Mapping):
        raise VoucherifyConfigError(f"order must be a mapping, got {type(order).__name__}.")
    safe = bool(order.get("id") or order.get("source_id")) if retry_safe is None else retry_safe
    return ApiRequest("create_order", "POST", "/v1/orders", json=dict(order), idempotent=safe)


def get_order(order_id: str) -> ApiRequest:
    """``GET /v1/orders/{orderId}`` (Voucherify id or source id)."""
    return ApiRequest("get_order", "GET", f"/v1/orders/{_segment(order_id, 'order_id')}")


def update_order(order_id: str, changes: Mapping[str, Any]) -> ApiRequest:
    """``PUT /v1/orders/{orderId}``."""
    return ApiRequest("update_order", "PUT", f"/v1/orders/{_segment(order_id, 'order_id')}", json=dict(changes))


def list_orders(limit: int, page: int, order: str | None) -> ApiRequest:
    """``GET /v1/orders``."""
    if order is not None:
        catalog.get_object("order").validate_order(order)
    return ApiRequest("list_orders", "GET", "/v1/orders", params=_page_params(limit, page, order))


def import_orders(orders: Sequence[Mapping[str, Any]]) -> ApiRequest:
    """``POST /v1/orders/import`` for at most 2000 historical orders."""
    if not 1 <= len(orders) <= MAX_ORDERS_PER_IMPORT:
        raise VoucherifyConfigError(
            f"import_orders takes 1 to {MAX_ORDERS_PER_IMPORT} orders per call, got {len(orders)}."
        )
    return ApiRequest("import_orders", "POST", "/v1/orders/import", json=[dict(o) for o in orders],
                      idempotent=False)


def get_redemption(redemption_id: str) -> ApiRequest:
    """``GET /v1/redemptions/{redemptionId}``."""
    return ApiRequest("get_redemption", "GET", f"/v1/redemptions/{_segment(redemption_id, 'redemption_id')}")


def get_voucher_redemptions(code: str) -> ApiRequest:
    """``GET /v1/vouchers/{code}/redemption``."""
    return ApiRequest("get_voucher_redemptions", "GET", f"/v1/vouchers/{_segment(code, 'code')}/redemption")


REDEMPTION_LIST_ORDERS = ("created_at", "-created_at", "id", "-id", "voucher_code", "-voucher_code",
                          "tracking_id", "-tracking_id", "customer_id", "-customer_id")
MAX_REDEMPTION_PAGE = 99


def list_redemptions(
    limit: int,
    page: int,
    *,
    created_after: datetime | str | None = None,
    created_before: datetime | str | None = None,
    result: str | None = None,
    campaign: str | None = None,
    customer: str | None = None,
    order: str | None = None,
) -> ApiRequest:
    """``GET /v1/redemptions`` (page at most 99)."""
    if not 1 <= page <= MAX_REDEMPTION_PAGE:
        raise VoucherifyConfigError(f"page must be between 1 and {MAX_REDEMPTION_PAGE}, got {page}.")
    if order is not None and order not in REDEMPTION_LIST_ORDERS:
        raise VoucherifyConfigError(
            f"order {order!r} is not allowed for redemptions; allowed: {', '.join(REDEMPTION_LIST_ORDERS)}."
        )
    if result is not None and result not in ("SUCCESS", "FAILURE"):
        raise VoucherifyConfigError(f"result must be SUCCESS or FAILURE, got {result!r}.")
    params = _page_params(limit, page, order)
    for key, value in (("result", result), ("campaign", campaign), ("customer", customer)):
        if value:
            params.append((key, value))
    if created_before is not None:
        params.append(("created_at[before]", iso_utc(created_before)))
    if created_after is not None:
        params.append(("created_at[after]", iso_utc(created_after)))
    return ApiRequest("list_redemptions", "GET", "/v1/redemptions", params=params)


def rollback_redemption(
    redemption_id: str,
    *,
    reason: str | None = None,
    tracking_id: str | None = None,
    body: Mapping[str, Any] | None = None,
) -> ApiRequest:
    """``POST /v1/redemptions/{redemptionId}/rollback``; not resent once it may have reached the server."""
    params = [(k, v) for k, v in (("reason", reason), ("tracking_id", tracking_id)) if v]
    return ApiRequest(
        "rollback_redemption",
        "POST",
        f"/v1/redemptions/{_segment(redemption_id, 'redemption_id')}/rollback",
        params=params,
        json=dict(body or {}),
        idempotent=False,
    )
