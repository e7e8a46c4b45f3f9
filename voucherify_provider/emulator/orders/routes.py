"""Orders over HTTP: create or upsert, get and update by id or source id, list, import."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from voucherify_provider.emulator.api_call import ApiCallDep
from voucherify_provider.emulator.dependencies import BackendDep
from voucherify_provider.emulator.orders.models import LIST_ORDERS
from voucherify_provider.emulator.query_params import choice_param, int_param

router = APIRouter()


@router.get("/v1/orders")
async def list_orders(request: Request, backend: BackendDep) -> Response:
    """A page of orders, generated and API-made."""
    order = choice_param(request, "order", LIST_ORDERS)
    limit, page = int_param(request, "limit", 10, 1, 100), int_param(request, "page", 1, 1, 100)
    return JSONResponse(backend.orders.list(limit, page, order))


@router.post("/v1/orders")
async def create_order(call: ApiCallDep, backend: BackendDep) -> Response:
    """Create an order, or update the one its ``id``/``source_id`` names."""
    return JSONResponse(backend.orders.upsert(call.body))


@router.post("/v1/orders/import")
async def import_orders(call: ApiCallDep, backend: BackendDep) -> Response:
    """Import up to 2000 orders."""
    return JSONResponse(backend.orders.import_many(call.body))


@router.get("/v1/orders/{order_id}")
async def get_order(order_id: str, backend: BackendDep) -> Response:
    """One order by id or source id."""
    return JSONResponse(backend.orders.get(order_id))


@router.put("/v1/orders/{order_id}")
async def update_order(order_id: str, call: ApiCallDep, backend: BackendDep) -> Response:
    """Update an order by id or source id."""
    return JSONResponse(backend.orders.update(order_id, call.body))
