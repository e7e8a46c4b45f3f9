"""The emulator's HTTP layer: Voucherify's routes, auth, rate limits and faults, then the admin routes."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from voucherify_provider import catalog
from voucherify_provider.emulator.faults import FaultInjector, RateLimiter
from voucherify_provider.emulator.filters import FilterError
from voucherify_provider.emulator.models import ApiFailure, Backend, invalid_payload

# The exact body the documentation shows for a bad key or download token.
UNAUTHORIZED = {"code": 401, "message": "Unauthorized", "key": "unauthorized"}


def _error(status: int, key: str, message: str, details: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "key": key, "message": message}
    if details:
        body["details"] = details
    body["request_id"] = f"v-{secrets.token_hex(9)}"
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiFailure(400, "invalid_query_params", "Invalid query params",
                         f"Query parameter {name} should be an integer between {low} and {high}")
    return value


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise invalid_payload("Request body is not valid JSON") from None


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


def create_app(backend: Backend) -> FastAPI:
    """Build the FastAPI application serving one backend."""
    app = FastAPI(title="Voucherify emulator", docs_url=None, redoc_url=None, openapi_url=None)
    faults = FaultInjector(backend.config)
    limiter = RateLimiter(backend.config)
    app.state.backend, app.state.faults, app.state.limiter = backend, faults, limiter

    async def serve(request: Request, route: str, handler: Callable[[Any], Any]) -> Response:
        """Auth, rate limit and faults around one API route, then the handler; always logged."""
        allowed, headers = limiter.take()
        status = 200
        try:
            if (request.headers.get("x-app-id") != backend.config.app_id
                    or request.headers.get("x-app-token") != backend.config.app_token):
                status = 401
                return JSONResponse(UNAUTHORIZED, 401, headers=headers)
            if not allowed:
                status = 429
                return JSONResponse({"code": 429, "message": "Too many requests hit the API too quickly."}, 429,
                                    headers=headers)
            fault = faults.draw(route)
            if fault and fault.delay:
                await asyncio.sleep(fault.delay)
            if fault and fault.status:
                status = fault.status
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(int(fault.retry_after))
                message = ("Too many requests hit the API too quickly." if status == 429
                           else "Internal Server Error" if status == 500 else "Service unavailable")
                return JSONResponse({"code": status, "message": message}, status, headers=headers)
            request.state.body = await _json_body(request) if request.method in ("POST", "PUT") else None
            result = handler(fault)
            if asyncio.iscoroutine(result):
                result = await result
            if isinstance(result, Response):
                result.headers.update(headers)
                status = result.status_code
                return result
            if result is None:
                status = 204
                return Response(status_code=204, headers=headers)
            return JSONResponse(result, 200, headers=headers)
        except ApiFailure as err:
            status = err.status
            return JSONResponse(_error(err.status, err.key, err.message, err.details,
                                       resource_id=err.resource_id, resource_type=err.resource_type),
                                err.status, headers=headers)
        finally:
            backend.log_request(route, request.method, request.url.path, status)

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- exports --------------------------------------------------------------------------------------

    @app.post("/v1/exports")
    async def create_export(request: Request) -> Response:
        return await serve(request, "create_export", lambda f: backend.create_export(
            request.state.body, orders_endpoint=False, fails=bool(f and f.export_error)))

    @app.post("/v1/orders/export")
    async def create_orders_export(request: Request) -> Response:
        return await serve(request, "create_orders_export", lambda f: backend.create_export(
            request.state.body, orders_endpoint=True, fails=bool(f and f.export_error)))

    @app.get("/v1/exports")
    async def list_exports(request: Request) -> Response:
        def handle(_: Any) -> Any:
            order = request.query_params.get("order")
            if order is not None and order not in ("created_at", "-created_at", "status", "-status"):
                raise ApiFailure(400, "invalid_query_params", "Invalid query params",
                                 "Query parameter order should be one of created_at, -created_at, status, -status")
            return backend.list_exports(_int_param(request, "limit", 10, 1, 100),
                                        _int_param(request, "page", 1, 1, 100), order, base(request))
        return await serve(request, "list_exports", handle)

    @app.get("/v1/exports/{export_id}")
    async def get_or_download_export(export_id: str, request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            return await serve(request, "get_export", lambda _: backend.get_export(export_id, base(request)))

        def download(fault: Any) -> Response:
            try:
                record = backend.authorize_download(export_id, token)
            except ApiFailure:
                return JSONResponse(UNAUTHORIZED, 401)
            part = _int_param(request, "part", 0, 0, 1_000_000)
            if part >= backend.part_count(record):
                raise ApiFailure(404, "not_found", "Resource not found", f"Export {export_id} has no part {part}")
            if fault and fault.body_base64 is not None:
                return Response(base64.b64decode(fault.body_base64), media_type="text/plain; charset=utf-8")
            stream = backend.export_file(record, part)
            if fault and fault.truncate:
                stream = _truncated(stream)
            if fault and fault.stall:
                stream = _stalled(stream, fault.stall)
            return StreamingResponse(stream, media_type="text/plain; charset=utf-8")
        return await serve(request, "download_export", download)

    @app.delete("/v1/exports/{export_id}")
    async def delete_export(export_id: str, request: Request) -> Response:
        return await serve(request, "delete_export", lambda _: backend.delete_export(export_id))

    # -- orders ---------------------------------------------------------------------------------------

    @app.get("/v1/orders")
    async def list_orders(request: Request) -> Response:
        def handle(_: Any) -> Any:
            order = request.query_params.get("order")
            allowed = ("created_at", "-created_at", "updated_at", "-updated_at", "status", "-status")
            if order is not None and order not in allowed:
                raise ApiFailure(400, "invalid_query_params", "Invalid query params",
                                 f"Query parameter order should be one of {', '.join(allowed)}")
            return backend.list_orders(_int_param(request, "limit", 10, 1, 100),
                                       _int_param(request, "page", 1, 1, 100), order)
        return await serve(request, "list_orders", handle)

    @app.post("/v1/orders")
    async def create_order(request: Request) -> Response:
        return await serve(request, "create_order", lambda _: backend.upsert_order(request.state.body))

    @app.post("/v1/orders/import")
    async def import_orders(request: Request) -> Response:
        return await serve(request, "import_orders", lambda _: backend.import_orders(request.state.body))

    @app.get("/v1/orders/{order_id}")
    async def get_order(order_id: str, request: Request) -> Response:
        return await serve(request, "get_order", lambda _: backend.get_order(order_id))

    @app.put("/v1/orders/{order_id}")
    async def update_order(order_id: str, request: Request) -> Response:
        return await serve(request, "update_order", lambda _: backend.update_order(order_id, request.state.body))

    # -- redemptions ----------------------------------------------------------------------------------

    @app.get("/v1/redemptions")
    async def list_redemptions(request: Request) -> Response:
        def handle(_: Any) -> Any:
            q = request.query_params
            order = q.get("order")
            allowed = ("created_at", "-created_at", "id", "-id", "voucher_code", "-voucher_code", "tracking_id",
                       "-tracking_id", "customer_id", "-customer_id")
            if order is not None and order not in allowed:
                raise ApiFailure(400, "invalid_query_params", "Invalid query params",
                                 f"Query parameter order should be one of {', '.join(allowed)}")
            if q.get("result") not in (None, "SUCCESS", "FAILURE"):
                raise ApiFailure(400, "invalid_query_params", "Invalid query params",
                                 "Query parameter result should be SUCCESS or FAILURE")
            return backend.list_redemptions(
                _int_param(request, "limit", 10, 1, 100), _int_param(request, "page", 1, 1, 99), order=order,
                after=q.get("created_at[after]"), before=q.get("created_at[before]"), result=q.get("result"),
                customer=q.get("customer"), campaign=q.get("campaign"))
        return await serve(request, "list_redemptions", handle)

    @app.get("/v1/redemptions/{redemption_id}")
    async def get_redemption(redemption_id: str, request: Request) -> Response:
        return await serve(request, "get_redemption", lambda _: backend.get_redemption(redemption_id))

    @app.post("/v1/redemptions/{redemption_id}/rollback")
    async def rollback(redemption_id: str, request: Request) -> Response:
        q = request.query_params
        body_reason = lambda: (request.state.body or {}).get("reason")  # noqa: E731
        return await serve(request, "rollback_redemption", lambda _: backend.rollback(
            redemption_id, q.get("reason") or body_reason(), q.get("tracking_id")))

    @app.get("/v1/vouchers/{code}/redemption")
    async def voucher_redemptions(code: str, request: Request) -> Response:
        return await serve(request, "get_voucher_redemptions", lambda _: backend.voucher_redemptions(code))

    # -- admin (tests only; no auth, not rate limited, not logged) ------------------------------------

    @app.get("/_emulator/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/_emulator/config")
    async def get_config() -> dict[str, Any]:
        return backend.config.public()

    @app.patch("/_emulator/config")
    async def patch_config(request: Request) -> Response:
        try:
            backend.config.update(await request.json())
        except (ValueError, TypeError) as err:
            return JSONResponse({"error": str(err)}, 400)
        return JSONResponse(backend.config.public())

    @app.get("/_emulator/ground-truth")
    async def ground_truth(request: Request) -> Response:
        q = request.query_params
        try:
            return JSONResponse(backend.ground_truth(q["object"], q.get("start"), q.get("end"),
                                                     q.get("ids", "false").lower() == "true",
                                                     q.get("placed_by", "created")))
        except (KeyError, ValueError) as err:
            return JSONResponse({"error": str(err)}, 400)

    @app.get("/_emulator/state")
    async def state(request: Request) -> Response:
        # The current state at the data clock (or ?as_of=), e.g. ?object=order&fields=id,updated_at,status
        q = request.query_params
        try:
            obj = catalog.get_object(q["object"])
            wanted = [f for f in q.get("fields", "").split(",") if f] or list(obj.fields)
            return JSONResponse(await asyncio.to_thread(backend.state, obj.name, wanted, q.get("as_of")))
        except (KeyError, ValueError, FilterError) as err:
            return JSONResponse({"error": str(err)}, 400)

    @app.get("/_emulator/requests")
    async def requests_seen() -> dict[str, Any]:
        with backend.lock:
            return {"counts": dict(backend.request_counts), "log": list(backend.request_log),
                    "faults_injected": dict(faults.injected)}

    @app.get("/_emulator/secrets")
    async def secrets_issued() -> dict[str, Any]:
        # For leak scans: every download token handed out, and the app token.
        with backend.lock:
            return {"download_tokens": list(backend.issued_tokens), "app_token": backend.config.app_token}

    @app.post("/_emulator/faults")
    async def script_faults(request: Request) -> Response:
        body = await request.json()
        try:
            queued = faults.script(body if isinstance(body, list) else [body])
        except (TypeError, ValueError) as err:
            return JSONResponse({"error": str(err)}, 400)
        return JSONResponse({"queued": queued})

    @app.post("/_emulator/reset")
    async def reset() -> dict[str, Any]:
        backend.reset()
        faults.clear()
        limiter.reset()
        return {"status": "reset"}

    return app
