"""FastAPI dependencies that hand routes what :func:`~voucherify_provider.emulator.responses.create_app`
put on the application: the backend, the fault injector and the rate limiter.

``async`` only so that FastAPI calls them on the event loop: a plain function would go through the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voucherify_provider.emulator.faults import FaultInjector, RateLimiter
from voucherify_provider.emulator.models import Backend


async def get_backend(request: Request) -> Backend:
    """The backend this application serves."""
    backend: Backend = request.app.state.backend
    return backend


async def get_faults(request: Request) -> FaultInjector:
    """The application's fault injector."""
    faults: FaultInjector = request.app.state.faults
    return faults


async def get_limiter(request: Request) -> RateLimiter:
    """The application's per-minute rate limiter."""
    limiter: RateLimiter = request.app.state.limiter
    return limiter


BackendDep = Annotated[Backend, Depends(get_backend)]
FaultsDep = Annotated[FaultInjector, Depends(get_faults)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
