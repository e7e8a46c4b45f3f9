"""VoucherifyAsyncHook: the hook's rules over httpx, for triggers running in the triggerer's event loop.

Requests are described by the same endpoint builders, errors parsed and retries decided by the same
:class:`~voucherify_provider.hooks._core.CallAttempts` as the sync hook; only the transport differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from airflow.sdk import BaseHook

from voucherify_provider import CONN_TYPE, DEFAULT_CONN_ID
from voucherify_provider.errors import explain_missing_connection
from voucherify_provider.exports import ExportStatus
from voucherify_provider.hooks import _endpoints as ep
from voucherify_provider.hooks._core import (
    ApiRequest,
    CallAttempts,
    ConnectionSettings,
    RateLimitState,
    RetryPolicy,
    mask_export_tokens,
    missing_connection,
    settings_from_connection,
)


class VoucherifyAsyncHook(BaseHook):
    """Async access to the export calls a trigger needs (create, get, status, delete).

    :param voucherify_conn_id: the ``voucherify`` connection to use.
    :param retry_policy: override the retry and backoff rules.
    :param sleep: how the hook waits between retries (default ``asyncio.sleep``).
    """

    conn_name_attr = "voucherify_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Voucherify (async)"

    def __init__(self, voucherify_conn_id: str = DEFAULT_CONN_ID, *, retry_policy: RetryPolicy | None = None,
                 sleep: Any = asyncio.sleep) -> None:
        super().__init__()
        self.voucherify_conn_id = voucherify_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self.rate_limit = RateLimitState()
        self._sleep = sleep
        self._settings: ConnectionSettings | None = None

    async def get_settings(self) -> ConnectionSettings:
        """The connection's validated settings, read once."""
        if self._settings is None:
            with explain_missing_connection(missing_connection(self.voucherify_conn_id)):
                conn = await self.aget_connection(self.voucherify_conn_id)
            self._settings = settings_from_connection(conn)
        return self._settings

    async def _send(self, request: ApiRequest) -> Any:
        """Send an API request with retries; return the decoded JSON body (None for 204)."""
        settings = await self.get_settings()
        url = settings.url_for(request.path)
        calls = CallAttempts(self.retry_policy, self.rate_limit, request.operation, url, request.idempotent, self.log)
        timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        async with httpx.AsyncClient(verify=settings.verify_tls, timeout=timeout, follow_redirects=False) as client:
            while True:
                pause = calls.pause()
                if pause > 0:
                    await self._sleep(pause)
                try:
                    response = await client.request(
                        request.method, url, params=tuple(request.params), json=request.json,
                        headers=settings.headers(),
                    )
                except httpx.TransportError as exc:
                    reached = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                    await self._sleep(calls.after_transport_error(type(exc).__name__, reached))
                    continue
                delay = calls.after_response(response.status_code, response.headers, lambda r=response: _body(r))
                if delay is None:
                    return response.json() if response.status_code != 204 and response.content else None
                await self._sleep(delay)

    async def create_export(
        self,
        exported_object: str,
        fields: Sequence[str] | None = None,
        order: str | None = None,
        filters: Mapping[str, Any] | None = None,
        *,
        retry_safe: bool = False,
    ) -> dict[str, Any]:
        """Start an export; see :meth:`VoucherifyHook.create_export`."""
        return await self._send(ep.create_export(exported_object, fields, order, filters, retry_safe=retry_safe))

    async def get_export(self, export_id: str) -> dict[str, Any]:
        """Fetch an export; its download token is registered with the secrets masker."""
        export = await self._send(ep.get_export(export_id))
        mask_export_tokens(export)
        return export

    async def get_export_status(self, export_id: str) -> ExportStatus:
        """Current status of an export."""
        return ExportStatus((await self.get_export(export_id))["status"])

    async def delete_export(self, export_id: str) -> None:
        """Delete an export."""
        await self._send(ep.delete_export(export_id))


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]
