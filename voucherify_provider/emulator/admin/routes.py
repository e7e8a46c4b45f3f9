"""The ``/_emulator`` routes tests drive the emulator with: settings, faults, ground truth, logs, reset.

No auth, not rate limited, not logged; errors answer ``{"error": ...}``, not Voucherify's error shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from voucherify_provider import catalog
from voucherify_provider.emulator.dependencies import BackendDep, FaultsDep, LimiterDep
from voucherify_provider.emulator.filters import FilterError

router = APIRouter(prefix="/_emulator")


def _bad_request(err: Exception) -> JSONResponse:
    return JSONResponse({"error": str(err)}, 400)


@router.get("/health")
async def health() -> dict[str, Any]:
    """Liveness."""
    return {"status": "ok"}


@router.get("/config")
async def get_config(backend: BackendDep) -> dict[str, Any]:
    """The settings (without the app token)."""
    return backend.config.public()


@router.patch("/config")
async def patch_config(request: Request, backend: BackendDep) -> Response:
    """Change run-time settings."""
    try:
        backend.config.update(await request.json())
    except (ValueError, TypeError) as err:
        return _bad_request(err)
    return JSONResponse(backend.config.public())


@router.get("/ground-truth")
async def ground_truth(request: Request, backend: BackendDep) -> Response:
    """Records of ``object`` in ``[start, end)`` placed by creation or by last change (``placed_by``)."""
    q = request.query_params
    try:
        return JSONResponse(backend.truth.window(q["object"], q.get("start"), q.get("end"),
                                                 q.get("ids", "false").lower() == "true",
                                                 q.get("placed_by", "created")))
    except (KeyError, ValueError) as err:
        return _bad_request(err)


@router.get("/state")
async def state(request: Request, backend: BackendDep) -> Response:
    """Every live record at the data clock (or ``?as_of=``), e.g. ``?object=order&fields=id,status``."""
    q = request.query_params
    try:
        obj = catalog.get_object(q["object"])
        wanted = [f for f in q.get("fields", "").split(",") if f] or list(obj.fields)
        return JSONResponse(await asyncio.to_thread(backend.truth.state, obj.name, wanted, q.get("as_of")))
    except (KeyError, ValueError, FilterError) as err:
        return _bad_request(err)


@router.get("/exports")
async def exports_ledger(backend: BackendDep) -> dict[str, Any]:
    """Every export made since the last reset, deleted ones included, and how many remain."""
    return backend.exports.ledger()


@router.get("/requests")
async def requests_seen(backend: BackendDep, faults: FaultsDep) -> dict[str, Any]:
    """Counts per route, the request log and the faults injected so far."""
    return {**backend.requests.snapshot(), "faults_injected": dict(faults.injected)}


@router.get("/secrets")
async def secrets_issued(backend: BackendDep) -> dict[str, Any]:
    """Every download token handed out, and the app token: what leak scans look for."""
    with backend.lock:
        return {"download_tokens": list(backend.exports.issued_tokens), "app_token": backend.config.app_token}


@router.post("/faults")
async def script_faults(request: Request, faults: FaultsDep) -> Response:
    """Queue faults: one object or a list of them."""
    body = await request.json()
    try:
        queued = faults.script(body if isinstance(body, list) else [body])
    except (TypeError, ValueError) as err:
        return _bad_request(err)
    return JSONResponse({"queued": queued})


@router.post("/reset")
async def reset(backend: BackendDep, faults: FaultsDep, limiter: LimiterDep) -> dict[str, Any]:
    """Forget exports, API-made orders and rollbacks, the request log, faults and the rate-limit window."""
    backend.reset()
    faults.clear()
    limiter.reset()
    return {"status": "reset"}
