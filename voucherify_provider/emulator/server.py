"""Run the emulator: in a background thread for tests, or in the foreground from the command line."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from voucherify_provider.emulator.config import EmulatorConfig
from voucherify_provider.emulator.models import Backend
from voucherify_provider.emulator.responses import create_app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningEmulator:
    """Handle on a started emulator: its URL, its settings, and the admin routes as methods."""

    base_url: str
    config: EmulatorConfig
    backend: Backend

    def connection_uri(self, conn_type: str = "voucherify") -> str:
        """JSON for ``AIRFLOW_CONN_<ID>`` pointing a connection at this emulator."""
        import json

        return json.dumps({"conn_type": conn_type, "login": self.config.app_id,
                           "password": self.config.app_token, "host": self.base_url})

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call an admin route (``/_emulator/...``) and return its JSON."""
        response = httpx.request(method, f"{self.base_url}/_emulator/{path.lstrip('/')}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change run-time settings (export delays, bound inclusivity, fault rates, ...)."""
        return self.admin("PATCH", "config", json=changes)

    def inject(self, *faults: dict[str, Any]) -> int:
        """Script faults, e.g. ``inject({"route": "get_export", "status": 503, "count": 2})``."""
        return int(self.admin("POST", "faults", json=list(faults))["queued"])

    def requests(self) -> dict[str, Any]:
        """Request counts per route, the request log and the faults injected so far."""
        return dict(self.admin("GET", "requests"))

    def export_ledger(self) -> dict[str, Any]:
        """Every export made since the last reset (deleted ones too): ``created``, ``deleted``, ``remaining``."""
        return dict(self.admin("GET", "exports"))

    def ground_truth(self, obj: str, start: str | None = None, end: str | None = None,
                     ids: bool = False, placed_by: str = "created") -> dict[str, Any]:
        """Records of ``obj`` created (``placed_by="last_change"``: last changed) in [start, end), at the
        data clock, as a correct extractor must land them."""
        params = {"object": obj, "ids": str(ids).lower(), "placed_by": placed_by}
        params.update({k: v for k, v in (("start", start), ("end", end)) if v})
        return dict(self.admin("GET", "ground-truth", params=params))

    def state(self, obj: str, fields: list[str], as_of: str | None = None) -> list[dict[str, str]]:
        """Every live record of ``obj`` at ``as_of`` (default: the data clock), ``fields`` rendered as in the CSV."""
        params = {"object": obj, "fields": ",".join(fields), **({"as_of": as_of} if as_of else {})}
        body = self.admin("GET", "state", params=params)
        return [dict(zip(body["fields"], row, strict=True)) for row in body["rows"]]

    def reset(self) -> None:
        """Forget exports, orders made through the API, faults and the request log."""
        self.admin("POST", "reset")


def build_server(config: EmulatorConfig, host: str, port: int,
                 log_level: str = "warning") -> tuple[uvicorn.Server, Backend]:
    """A uvicorn server for a fresh backend, and that backend."""
    backend = Backend(config)
    app = create_app(backend)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                           lifespan="off"))
    return server, backend


@contextmanager
def run_emulator(config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                 port: int | None = None) -> Iterator[RunningEmulator]:
    """Start the emulator in a background thread on a free port; stop it on exit."""
    config = config or EmulatorConfig()
    port = port or free_port(host)
    server, backend = build_server(config, host, port)
    thread = threading.Thread(target=server.run, name=f"voucherify-emulator-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"Voucherify emulator did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield RunningEmulator(f"http://{host}:{port}", config, backend)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
