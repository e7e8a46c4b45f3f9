"""Exceptions raised by the Voucherify provider.

One API error type carries everything Voucherify says about a failure; its message stands on its own in
a task log ("400 invalid_export_fields: Unsupported field used... (request v-...)"). Messages never
contain the app token or a download token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class VoucherifyError(Exception):
    """Base class for every error the provider raises."""


class VoucherifyConfigError(VoucherifyError, ValueError):
    """The connection or the arguments are wrong; no API call was made."""


class VoucherifySecurityError(VoucherifyError):
    """A request was refused because it would expose credentials (foreign host, plain http)."""


class VoucherifyApiError(VoucherifyError):
    """Voucherify answered with an error status (or never answered, after all retries)."""

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        key: str | None = None,
        details: str | None = None,
        request_id: str | None = None,
        resource_id: str | None = None,
        resource_type: str | None = None,
        operation: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.key = key
        self.api_message = message
        self.details = details
        self.request_id = request_id
        self.resource_id = resource_id
        self.resource_type = resource_type
        self.operation = operation
        self.hint = hint
        super().__init__(self._render())

    @classmethod
    def from_body(cls, status: int, body: Any, *, operation: str | None = None) -> VoucherifyApiError:
        """Build the right error subclass from an HTTP status and a (possibly non-JSON) body."""
        data = body if isinstance(body, dict) else {}
        message = str(data.get("message") or (body if isinstance(body, str) and body else "no error body"))
        kwargs: dict[str, Any] = {
            "key": data.get("key"),
            "details": data.get("details"),
            "request_id": data.get("request_id"),
            "resource_id": data.get("resource_id"),
            "resource_type": data.get("resource_type"),
            "operation": operation,
        }
        error_cls: type[VoucherifyApiError] = cls
        if status in (401, 403):
            error_cls = VoucherifyAuthError
        elif status == 404:
            error_cls = VoucherifyNotFoundError
        elif status == 429:
            error_cls = VoucherifyRateLimitError
        return error_cls(status, message[:500], **kwargs)

    def _render(self) -> str:
        head = f"{self.status} {self.key}" if self.key else f"{self.status}"
        text = self.details or self.api_message
        if self.details and self.api_message and self.api_message not in self.details:
            text = f"{self.api_message}: {self.details}"
        rendered = f"{head}: {text}"
        if self.request_id:
            rendered += f" (request {self.request_id})"
        if self.operation:
            rendered = f"Voucherify {self.operation} failed: {rendered}"
        if self.hint:
            rendered += f". {self.hint}"
        return rendered


class VoucherifyAuthError(VoucherifyApiError):
    """401/403: wrong credentials, or a project on another cluster than the connection's host."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "hint",
            "Check the connection's Application ID (login) and Secret Key (password), and that its host "
            "names your project's cluster (EU, US1, AS1 or your dedicated base URL): calling the wrong "
            "region fails authentication.",
        )
        super().__init__(*args, **kwargs)


class VoucherifyNotFoundError(VoucherifyApiError):
    """404: the export, order or redemption does not exist (or was deleted)."""


class VoucherifyRateLimitError(VoucherifyApiError):
    """429 after all retries: the plan's request limit is exhausted."""


class VoucherifyTransportError(VoucherifyApiError):
    """The API could not be reached or the connection broke, after all retries."""

    def __init__(self, message: str, *, operation: str | None = None) -> None:
        super().__init__(None, message, key="transport_error", operation=operation)


class VoucherifyDownloadError(VoucherifyError):
    """An export file could not be downloaded whole (truncated, interrupted, export not DONE)."""


class VoucherifyExportFailedError(VoucherifyError):
    """The export ended in ERROR (Voucherify says no more); only a fresh export can recover."""

    def __init__(self, export_id: str, hint: str = "") -> None:
        self.export_id = export_id
        super().__init__(
            f"Export {export_id} ended in ERROR (Voucherify gives no reason). Only a new export can recover: "
            "retry the task that creates it" + (f"; {hint}" if hint else ".")
        )


class VoucherifyExportTimeoutError(VoucherifyError):
    """The export did not finish in time."""

    def __init__(self, export_id: str, waited: float, last_status: str) -> None:
        self.export_id, self.waited, self.last_status = export_id, waited, last_status
        super().__init__(
            f"Export {export_id} was still {last_status} after waiting {waited:.0f}s; raise the timeout if "
            "exports of this size take longer, or check Voucherify's status page."
        )


@contextmanager
def explain_missing_connection(message: str) -> Iterator[None]:
    """Turn Airflow's "connection not found" into a VoucherifyConfigError saying ``message`` (matched by
    name: importing Airflow's exception modules here would cost every DAG parse)."""
    try:
        yield
    except Exception as err:
        if type(err).__name__ != "AirflowNotFoundException":
            raise
        raise VoucherifyConfigError(message) from None
