"""The emulator's HTTP layer: one FastAPI application made of the resource routers, the pipeline every API
call goes through (``api_call``) and the one handler of API errors (``api_errors``)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from voucherify_provider.emulator import api_errors
from voucherify_provider.emulator.admin.routes import router as admin_router
from voucherify_provider.emulator.api_call import ApiCallMiddleware, api_call
from voucherify_provider.emulator.exports.routes import router as exports_router
from voucherify_provider.emulator.faults import FaultInjector, RateLimiter
from voucherify_provider.emulator.models import Backend
from voucherify_provider.emulator.orders.routes import router as orders_router
from voucherify_provider.emulator.redemptions.routes import router as redemptions_router

API_ROUTERS = (exports_router, orders_router, redemptions_router)


def create_app(backend: Backend) -> FastAPI:
    """Build the FastAPI application serving one backend."""
    app = FastAPI(title="Voucherify emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.faults = FaultInjector(backend.config)
    app.state.limiter = RateLimiter(backend.config)
    api_errors.install(app)
    app.add_middleware(ApiCallMiddleware, log=backend.requests)
    for router in API_ROUTERS:
        app.include_router(router, dependencies=[Depends(api_call)])
    app.include_router(admin_router)
    return app
