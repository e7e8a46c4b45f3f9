"""What every Voucherify API request goes through, once for all routes: rate limit, auth, faults, body,
then the rate-limit headers on the answer and an entry in the request log.

:func:`api_call` is a dependency applied to every API router (admin routes go without it: no auth, not
rate limited, not logged); :class:`ApiCallMiddleware` finishes the answers of the requests it marked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voucherify_provider.emulator.api_errors import (
    injected_status,
    invalid_payload,
    too_many_requests,
    unauthorized,
)
from voucherify_provider.emulator.dependencies import BackendDep, FaultsDep, LimiterDep
from voucherify_provider.emulator.faults import Fault
from voucherify_provider.emulator.request_log import RequestLog

_STATE_KEY = "voucherify_api_call"


@dataclass
class ApiCall:
    """One API request as the routes see it: its operation, the fault drawn for it, its JSON body."""

    operation: str  # the route's name in faults and the request log, e.g. ``get_export``
    headers: dict[str, str]  # rate-limit headers every answer carries
    fault: Fault | None = None
    body: Any = None


def operation_of(request: Request) -> str:
    """The operation a request calls: its route's name, except for downloads."""
    name: str = request.scope["route"].name
    # Voucherify serves an export's file at the export's own URL; only the download token tells them apart.
    if name == "get_export" and request.query_params.get("token") is not None:
        return "download_export"
    return name


async def api_call(request: Request, backend: BackendDep, faults: FaultsDep, limiter: LimiterDep) -> ApiCall:
    """Count the request against the rate limit, check the app keys, apply a scripted or random fault and
    read the JSON body of a POST or PUT."""
    allowed, headers = limiter.take()
    call = ApiCall(operation_of(request), headers)
    request.scope.setdefault("state", {})[_STATE_KEY] = call
    if (request.headers.get("x-app-id") != backend.config.app_id
            or request.headers.get("x-app-token") != backend.config.app_token):
        raise unauthorized()
    if not allowed:
        raise too_many_requests()
    call.fault = faults.draw(call.operation)
    if call.fault and call.fault.delay:
        await asyncio.sleep(call.fault.delay)
    if call.fault and call.fault.status:
        raise injected_status(call.fault.status, call.fault.retry_after)
    if request.method in ("POST", "PUT"):
        try:
            call.body = await request.json()
        except ValueError:
            raise invalid_payload("Request body is not valid JSON") from None
    return call


ApiCallDep = Annotated[ApiCall, Depends(api_call)]


class ApiCallMiddleware:
    """Puts the rate-limit headers on the answer to every request :func:`api_call` saw, and logs it.

    Pure ASGI rather than per-route code, so error answers from the exception handler get the headers too,
    and streamed downloads pass through untouched.
    """

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        answered = False

        async def finish(message: Message) -> None:
            nonlocal answered
            call = state.get(_STATE_KEY)
            if message["type"] == "http.response.start" and call is not None:
                answered = True
                headers = MutableHeaders(scope=message)
                for key, value in call.headers.items():
                    headers[key] = value
                self.log.record(call.operation, scope["method"], scope["path"], message["status"])
            await send(message)

        try:
            await self.app(scope, receive, finish)
        except Exception:
            call = state.get(_STATE_KEY)
            if call is not None and not answered:  # a bug in a route: the server answers 500
                self.log.record(call.operation, scope["method"], scope["path"], 500)
            raise
