"""Exports over HTTP: create (also ``/v1/orders/export``), get, list, delete, and the file download."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from voucherify_provider.emulator.api_call import ApiCall, ApiCallDep
from voucherify_provider.emulator.api_errors import api_error
from voucherify_provider.emulator.dependencies import BackendDep
from voucherify_provider.emulator.exports.models import EXPORT_LIST_ORDERS
from voucherify_provider.emulator.models import Backend
from voucherify_provider.emulator.query_params import choice_param, int_param

router = APIRouter()
CSV_MEDIA_TYPE = "text/plain; charset=utf-8"


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _truncated(stream: Iterator[bytes]) -> Iterator[bytes]:
    first = next(stream, b"")
    yield first[: max(1, len(first) // 2)]
    # Breaking off mid-body makes the server drop the connection without the final chunk.
    raise ConnectionAbortedError("emulated truncated download")


def _stalled(stream: Iterator[bytes], seconds: float) -> Iterator[bytes]:
    # Sync generator: Starlette iterates it in a worker thread, so sleeping blocks no other request.
    yield next(stream, b"")
    time.sleep(seconds)
    yield from stream


@router.post("/v1/exports")
async def create_export(call: ApiCallDep, backend: BackendDep) -> Response:
    """Schedule an export of any object."""
    fails = bool(call.fault and call.fault.export_error)
    return JSONResponse(backend.exports.create(call.body, orders_endpoint=False, fails=fails))


@router.post("/v1/orders/export")
async def create_orders_export(call: ApiCallDep, backend: BackendDep) -> Response:
    """Schedule an export of orders (the body holds ``parameters`` only)."""
    fails = bool(call.fault and call.fault.export_error)
    return JSONResponse(backend.exports.create(call.body, orders_endpoint=True, fails=fails))


@router.get("/v1/exports")
async def list_exports(request: Request, backend: BackendDep) -> Response:
    """A page of exports."""
    order = choice_param(request, "order", EXPORT_LIST_ORDERS)
    limit, page = int_param(request, "limit", 10, 1, 100), int_param(request, "page", 1, 1, 100)
    return JSONResponse(backend.exports.list(limit, page, order, _base_url(request)))


@router.get("/v1/exports/{export_id}")
async def get_export(export_id: str, request: Request, call: ApiCallDep, backend: BackendDep) -> Response:
    """The export, or with ``?token=`` its file (``&part=N`` of a split result)."""
    if call.operation == "download_export":
        return _download(export_id, request, call, backend)
    return JSONResponse(backend.exports.get(export_id, _base_url(request)))


def _download(export_id: str, request: Request, call: ApiCall, backend: Backend) -> Response:
    record = backend.exports.authorize_download(export_id, request.query_params.get("token"))
    part = int_param(request, "part", 0, 0, 1_000_000)
    if part >= backend.exports.part_count(record):
        raise api_error(404, "not_found", "Resource not found", f"Export {export_id} has no part {part}")
    fault = call.fault
    if fault and fault.body_base64 is not None:
        return Response(base64.b64decode(fault.body_base64), media_type=CSV_MEDIA_TYPE)
    stream = backend.exports.file(record, part)
    if fault and fault.truncate:
        stream = _truncated(stream)
    if fault and fault.stall:
        stream = _stalled(stream, fault.stall)
    return StreamingResponse(stream, media_type=CSV_MEDIA_TYPE)


@router.delete("/v1/exports/{export_id}")
async def delete_export(export_id: str, backend: BackendDep) -> Response:
    """Delete an export (204)."""
    backend.exports.delete(export_id)
    return Response(status_code=204)
