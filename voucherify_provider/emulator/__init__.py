"""A Voucherify emulator: a real HTTP server that behaves like the API, for offline tests and demos.

``python -m voucherify_provider.emulator`` runs it in the foreground; :func:`run_emulator` runs it in a
background thread; the ``voucherify_emulator`` pytest fixture (registered by the package) yields a
running one. Layout follows moto's split per resource: ``exports``, ``orders`` and ``redemptions`` each hold
a ``models`` (state and behaviour) and a ``routes`` (an ``APIRouter``); ``models.Backend`` composes them,
``responses.create_app`` serves them (docs/emulator.md has the full map).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voucherify_provider.emulator.config import EmulatorConfig

if TYPE_CHECKING:
    from voucherify_provider.emulator.server import RunningEmulator, run_emulator

__all__ = ["EmulatorConfig", "RunningEmulator", "run_emulator"]


def __getattr__(name: str) -> Any:
    # uvicorn and FastAPI load only when a server is actually started.
    if name in ("run_emulator", "RunningEmulator"):
        from voucherify_provider.emulator import server

        return getattr(server, name)
    raise AttributeError(name)
