"""Redemptions over HTTP: list, get, a voucher's redemptions, rollback."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from voucherify_provider.emulator.api_call import ApiCallDep
from voucherify_provider.emulator.api_errors import invalid_query_params
from voucherify_provider.emulator.dependencies import BackendDep
from voucherify_provider.emulator.query_params import choice_param, int_param
from voucherify_provider.emulator.redemptions.models import LIST_ORDERS, RESULTS

router = APIRouter()


@router.get("/v1/redemptions")
async def list_redemptions(request: Request, backend: BackendDep) -> Response:
    """A page of redemptions (``created_at[after]``/``[before]``, result, customer, campaign; page <= 99)."""
    q = request.query_params
    order = choice_param(request, "order", LIST_ORDERS)
    if q.get("result") not in (None, *RESULTS):
        raise invalid_query_params("Query parameter result should be SUCCESS or FAILURE")
    limit, page = int_param(request, "limit", 10, 1, 100), int_param(request, "page", 1, 1, 99)
    return JSONResponse(backend.redemptions.list(
        limit, page, order=order, after=q.get("created_at[after]"), before=q.get("created_at[before]"),
        result=q.get("result"), customer=q.get("customer"), campaign=q.get("campaign")))


@router.get("/v1/redemptions/{redemption_id}")
async def get_redemption(redemption_id: str, backend: BackendDep) -> Response:
    """One redemption or rollback."""
    return JSONResponse(backend.redemptions.get(redemption_id))


@router.post("/v1/redemptions/{redemption_id}/rollback")
async def rollback_redemption(redemption_id: str, request: Request, call: ApiCallDep,
                              backend: BackendDep) -> Response:
    """Roll a successful redemption back (``reason`` from the query, else the body)."""
    q = request.query_params
    reason = q.get("reason") or (call.body or {}).get("reason")
    return JSONResponse(backend.redemptions.rollback(redemption_id, reason, q.get("tracking_id")))


@router.get("/v1/vouchers/{code}/redemption")
async def get_voucher_redemptions(code: str, backend: BackendDep) -> Response:
    """Every redemption of one voucher."""
    return JSONResponse(backend.redemptions.of_voucher(code))
