"""Every error the emulated API answers, in Voucherify's JSON shape, and the handler that sends them.

Models and routes raise :class:`ApiFailure` (built by the functions below); :func:`install` registers the one
exception handler that turns it into a response.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

TOO_MANY_REQUESTS = "Too many requests hit the API too quickly."


class ApiFailure(Exception):
    """An error the API answers with: an HTTP status, Voucherify's error body and any extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {body.get('key', '')}: {body.get('details') or body.get('message')}")
        self.status, self.body, self.headers = status, body, headers or {}


def api_error(status: int, key: str, message: str, details: str | None = None, *,
              resource_id: str | None = None, resource_type: str | None = None) -> ApiFailure:
    """The documented error body: ``code``, ``key``, ``message``, ``details``, ``request_id`` and the resource."""
    body: dict[str, Any] = {"code": status, "key": key, "message": message}
    if details:
        body["details"] = details
    body["request_id"] = f"v-{secrets.token_hex(9)}"
    body.update({k: v for k, v in (("resource_id", resource_id), ("resource_type", resource_type)) if v is not None})
    return ApiFailure(status, body)


def not_found(kind: str, resource_id: str) -> ApiFailure:
    """The documented 404 body."""
    return api_error(404, "not_found", "Resource not found", f"Cannot find {kind} with id {resource_id}",
                     resource_id=resource_id, resource_type=kind)


def invalid_payload(details: str) -> ApiFailure:
    """The documented 400 invalid_payload body."""
    return api_error(400, "invalid_payload", "Invalid payload", details)


def invalid_query_params(details: str) -> ApiFailure:
    """The 400 answer to a query parameter out of its range or enum."""
    return api_error(400, "invalid_query_params", "Invalid query params", details)


def unauthorized() -> ApiFailure:
    """A bad app key or download token: the exact body the documentation shows (no request id)."""
    return ApiFailure(401, {"code": 401, "message": "Unauthorized", "key": "unauthorized"})


def too_many_requests() -> ApiFailure:
    """429 beyond the per-minute limit (the limiter's headers carry ``Retry-After``)."""
    return ApiFailure(429, {"code": 429, "message": TOO_MANY_REQUESTS})


def injected_status(status: int, retry_after: float | None = None) -> ApiFailure:
    """A scripted or random 5xx/429 fault, with the short body the gateway sends."""
    message = (TOO_MANY_REQUESTS if status == 429
               else "Internal Server Error" if status == 500 else "Service unavailable")
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return ApiFailure(status, {"code": status, "message": message}, headers)


async def _answer(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiFailure)
    return JSONResponse(exc.body, exc.status, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Answer every :class:`ApiFailure` raised by a route or a dependency with its status and body."""
    app.add_exception_handler(ApiFailure, _answer)
