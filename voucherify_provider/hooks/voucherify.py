"""VoucherifyHook: authentication, HTTP, retries and every Voucherify API call the provider makes."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, partial
from typing import Any

import requests
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError

from voucherify_provider import CONN_TYPE, DEFAULT_CONN_ID
from voucherify_provider.errors import (
    VoucherifyApiError,
    VoucherifyDownloadError,
    VoucherifyError,
    VoucherifyExportFailedError,
    VoucherifyExportTimeoutError,
    VoucherifyNotFoundError,
    explain_missing_connection,
)
from voucherify_provider.exports import ExportStatus, is_request_of, next_interval
from voucherify_provider.hooks import _endpoints as ep
from voucherify_provider.hooks._core import (
    ApiRequest,
    CallAttempts,
    ConnectionSettings,
    RateLimitState,
    RetryPolicy,
    export_urls,
    mask_export_tokens,
    mask_secret,
    missing_connection,
    redact_url,
    settings_from_connection,
)
from voucherify_provider.utc import as_utc, plus_one_ms

__all__ = ["ExportPart", "ExportStatus", "RetryPolicy", "VoucherifyHook", "mask_secret"]


@dataclass
class ExportPart:
    """One file of an export's result, streamed on demand (several when the result is chunked)."""

    hook: VoucherifyHook
    export_id: str
    index: int
    count: int
    url: str

    @property
    def redacted_url(self) -> str:
        """The file's URL with its download token hidden, for logs."""
        return redact_url(self.url)

    def iter_bytes(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream this part's bytes; raises VoucherifyDownloadError if the transfer breaks off."""
        return self.hook._stream_part(self, chunk_size)


class VoucherifyHook(BaseHook):
    """Talk to the Voucherify API through an Airflow connection of type ``voucherify``.

    :param voucherify_conn_id: connection with the Application ID (login), Secret Key (password) and
        the cluster (``EU``, ``US1``, ``AS1``) or a base URL (``host``).
    :param retry_policy: override the retry and backoff rules (see :class:`RetryPolicy`).
    :param sleep: how the hook waits between retries (default ``time.sleep``); tests pass a recorder so
        retries run instantly.
    """

    conn_name_attr = "voucherify_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Voucherify"

    def __init__(
        self,
        voucherify_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        sleep: Any = time.sleep,
    ) -> None:
        super().__init__()
        self.voucherify_conn_id = voucherify_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self.rate_limit = RateLimitState()
        self._sleep = sleep

    # -- connection ---------------------------------------------------------------------------------

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection's validated settings (read once per hook)."""
        with explain_missing_connection(missing_connection(self.voucherify_conn_id)):
            conn = self.get_connection(self.voucherify_conn_id)
        return settings_from_connection(conn)

    @cached_property
    def session(self) -> requests.Session:
        """Pooled HTTP session carrying the auth headers; retries are ours, not urllib3's."""
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = self.settings.verify_tls
        return session

    def get_conn(self) -> requests.Session:
        """Return the pooled session (Airflow hook protocol)."""
        return self.session

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated call; explain a wrong region or wrong credentials."""
        try:
            page = self._send(ep.list_exports(limit=1, page=1, order=None))
        except VoucherifyError as err:
            return False, str(err)
        return True, f"Connected to {self.settings.base_url}: {page.get('total', 0)} exports visible."

    # -- the one HTTP path --------------------------------------------------------------------------

    def _send(self, request: ApiRequest) -> Any:
        """Send an API request with retries; return the decoded JSON body (None for 204)."""
        response = self._request(
            request.method,
            self.settings.url_for(request.path),
            operation=request.operation,
            idempotent=request.idempotent,
            params=request.params,
            json=request.json,
        )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        idempotent: bool,
        stream: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with the retry policy; return a 2xx/3xx response or raise a VoucherifyApiError."""
        calls = CallAttempts(self.retry_policy, self.rate_limit, operation, url, idempotent, self.log)
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        while True:
            pause = calls.pause()
            if pause > 0:
                self._sleep(pause)
            try:
                response = self.session.request(
                    method, url, headers=self.settings.headers(), timeout=timeout, stream=stream,
                    allow_redirects=False, **kwargs,
                )
            except requests.RequestException as exc:
                self._sleep(calls.after_transport_error(type(exc).__name__, _reached_server(exc)))
                continue
            delay = calls.after_response(response.status_code, response.headers, partial(_body, response))
            if delay is None:
                return response
            response.close()
            self._sleep(delay)

    # -- exports ------------------------------------------------------------------------------------

    def create_export(
        self,
        exported_object: str,
        fields: Sequence[str] | None = None,
        order: str | None = None,
        filters: Mapping[str, Any] | None = None,
        *,
        retry_safe: bool = False,
    ) -> dict[str, Any]:
        """Start an export (``POST /v1/exports``); fields and order are checked before the call.

        Not resent after a failure that may have reached the server, since that could start a second
        export; pass ``retry_safe=True`` if a duplicate export is acceptable.
        """
        return self._send(ep.create_export(exported_object, fields, order, filters, retry_safe=retry_safe))

    def create_orders_export(
        self,
        fields: Sequence[str] | None = None,
        order: str | None = None,
        filters: Mapping[str, Any] | None = None,
        *,
        retry_safe: bool = False,
    ) -> dict[str, Any]:
        """Start an orders export through ``POST /v1/orders/export``."""
        return self._send(ep.create_orders_export(fields, order, filters, retry_safe=retry_safe))

    def get_export(self, export_id: str) -> dict[str, Any]:
        """Fetch an export; its download token is registered with the secrets masker."""
        export = self._send(ep.get_export(export_id))
        mask_export_tokens(export)
        return export

    def get_export_status(self, export_id: str) -> ExportStatus:
        """Current status of an export."""
        return ExportStatus(self.get_export(export_id)["status"])

    def wait_for_export(self, export_id: str, *, timeout: float = 3600, poll_interval: float = 5.0,
                        max_poll_interval: float = 120.0) -> dict[str, Any]:
        """Poll until the export is DONE (returned) or ERROR (raised), growing the interval between polls.

        Raises :class:`VoucherifyExportFailedError` on ERROR and :class:`VoucherifyExportTimeoutError`
        (with the last status) when ``timeout`` seconds pass first.
        """
        started, interval = time.monotonic(), poll_interval
        while True:
            export = self.get_export(export_id)
            status = export.get("status")
            if status == ExportStatus.DONE:
                return export
            if status == ExportStatus.ERROR:
                raise VoucherifyExportFailedError(export_id)
            waited = time.monotonic() - started
            if waited + interval > timeout:
                raise VoucherifyExportTimeoutError(export_id, waited, str(status))
            self.log.info("Export %s is %s; next check in %.0fs", export_id, status, interval)
            self._sleep(interval)
            interval = next_interval(interval, max_poll_interval)

    def delete_export(self, export_id: str, *, missing_ok: bool = False) -> None:
        """Delete an export (``DELETE /v1/exports/{id}``)."""
        try:
            self._send(ep.delete_export(export_id))
        except VoucherifyNotFoundError:
            if not missing_ok:
                raise

    def discard_export(self, export_id: str, reason: str) -> bool:
        """Delete an export nobody needs any more (landed, or given up on), saying why; a failure is logged, not
        raised: clean-up must not change the task's outcome. True when the export is gone."""
        try:
            self.delete_export(export_id, missing_ok=True)
        except Exception as err:
            self.log.warning("Export %s could not be deleted (%s); delete it in Voucherify.", export_id,
                             type(err).__name__)
            return False
        self.log.info("Deleted export %s in Voucherify: %s", export_id, reason)
        return True

    def list_exports(self, order: str | None = None, page_size: int = ep.MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Every export, page by page, stopping at the last page."""
        yield from self._paginate(lambda page: ep.list_exports(page_size, page, order), "exports")

    def find_exports(self, exported_object: str, parameters: Mapping[str, Any], created_after: datetime,
                     created_before: datetime | None = None) -> list[dict[str, Any]]:
        """The exports of ``exported_object`` made with exactly these ``parameters``, created in
        ``[created_after, created_before]``, newest first: one listing page, or a few, read newest first
        until an older export."""
        found = []
        for export in self.list_exports(order="-created_at"):
            created = as_utc(str(export.get("created_at")), "created_at")
            if created < created_after:
                break
            if (created_before is None or created <= created_before) and is_request_of(export, exported_object,
                                                                                         parameters):
                found.append(export)
        return found

    def download_export(self, export_id: str, export: Mapping[str, Any] | None = None) -> list[ExportPart]:
        """The files of a DONE export, each streamed on demand with :meth:`ExportPart.iter_bytes`.

        Pass ``export`` when the caller has just fetched it, to spare a second ``GET``.
        """
        export = export if export is not None else self.get_export(export_id)
        status = export.get("status")
        if status != ExportStatus.DONE:
            raise VoucherifyDownloadError(f"Export {export_id} is {status}, not DONE: nothing to download yet.")
        urls = export_urls(export)
        if not urls:
            raise VoucherifyDownloadError(f"Export {export_id} is DONE but its result has no file URL.")
        for url in urls:
            self.settings.check_download_url(url)
        return [ExportPart(self, export_id, i, len(urls), url) for i, url in enumerate(urls)]

    def iter_export_bytes(self, export_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream an export's single file as bytes (see :meth:`download_export` for chunked results)."""
        parts = self.download_export(export_id)
        if len(parts) != 1:
            raise VoucherifyDownloadError(
                f"Export {export_id} was split into {len(parts)} files; use download_export() to read each."
            )
        return parts[0].iter_bytes(chunk_size)

    def _stream_part(self, part: ExportPart, chunk_size: int) -> Iterator[bytes]:
        response = self._open_download(part)
        received = 0
        expected = response.headers.get("Content-Length")
        self.log.info("Downloading export %s part %d/%d from %s", part.export_id, part.index + 1, part.count,
                      part.redacted_url)
        try:
            for chunk in response.iter_content(chunk_size=chunk_size):
                received += len(chunk)
                yield chunk
        except requests.RequestException as exc:
            raise VoucherifyDownloadError(
                f"Download of export {part.export_id} part {part.index + 1}/{part.count} broke off after "
                f"{received} bytes ({type(exc).__name__}); download it again."
            ) from None
        finally:
            response.close()
        if expected is not None and int(expected) != received:
            raise VoucherifyDownloadError(
                f"Download of export {part.export_id} part {part.index + 1}/{part.count} is truncated: "
                f"{received} of {expected} bytes; download it again."
            )

    def _open_download(self, part: ExportPart) -> requests.Response:
        """GET a file URL with the credentials; on 401 (expired token) refresh the URL once."""
        for refreshed in (False, True):
            url = self.settings.check_download_url(part.url)
            try:
                response = self._request("GET", url, operation="download_export", idempotent=True, stream=True)
            except VoucherifyApiError as err:
                if err.status == 401 and not refreshed:
                    self.log.info("Download token of export %s rejected; fetching a fresh URL", part.export_id)
                    fresh = export_urls(self.get_export(part.export_id))
                    if len(fresh) != part.count:
                        raise VoucherifyDownloadError(
                            f"Export {part.export_id} changed its file list while downloading; start again."
                        ) from None
                    part.url = fresh[part.index]
                    continue
                raise
            if response.is_redirect:
                response.close()
                raise VoucherifyDownloadError(
                    f"Download of export {part.export_id} answered a redirect; not following it with "
                    "credentials."
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def read_export_dataframe(self, export_id: str, window: Any = None) -> Any:
        """A DONE export as a pandas DataFrame with pyarrow-backed dtypes, typed like the Parquet landing.

        Streams and types the file(s) with the same parser as VoucherifyDownloadToWarehouseOperator; pass a
        :class:`voucherify_provider.window.Window` to keep only the rows created in it.
        """
        import pandas as pd
        import pyarrow as pa

        from voucherify_provider import catalog
        from voucherify_provider.landing.stream import IterStream
        from voucherify_provider.landing.typed_csv import NeedsDiagnosis, TypedCsvReader, arrow_schema

        export = self.get_export(export_id)
        parts = self.download_export(export_id, export)
        obj = catalog.get_object(export["exported_object"])
        fields = list((export.get("parameters") or {}).get("fields") or obj.default_fields)
        batches: list[Any] = []
        for part in parts:
            try:
                reader = TypedCsvReader(obj, fields, window=window, label=f"Export {export_id}")
                part_batches = list(reader.batches(IterStream(part.iter_bytes())))
            except NeedsDiagnosis:  # read again as text to name the bad row, column and value
                reader = TypedCsvReader(obj, fields, window=window, label=f"Export {export_id}", diagnose=True)
                part_batches = list(reader.batches(IterStream(part.iter_bytes())))
            batches.extend(part_batches)
        table = pa.Table.from_batches(batches, schema=arrow_schema(obj, fields))
        return table.to_pandas(types_mapper=pd.ArrowDtype)

    # -- orders -------------------------------------------------------------------------------------

    def create_order(self, order: Mapping[str, Any], *, retry_safe: bool | None = None) -> dict[str, Any]:
        """Create or update an order (``POST /v1/orders``, an upsert by ``id``/``source_id``)."""
        return self._send(ep.create_order(order, retry_safe=retry_safe))

    def get_order(self, order_id: str) -> dict[str, Any]:
        """Fetch an order by Voucherify id or source id."""
        return self._send(ep.get_order(order_id))

    def update_order(self, order_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Update an order (``PUT /v1/orders/{id}``)."""
        return self._send(ep.update_order(order_id, changes))

    def list_orders(self, order: str | None = None, page_size: int = ep.MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Orders page by page; for full extracts prefer an export (listing stops at page 100)."""
        yield from self._paginate(lambda page: ep.list_orders(page_size, page, order), "orders")

    def import_orders(self, orders: Sequence[Mapping[str, Any]]) -> list[str]:
        """Import historical orders in batches of 2000; return the async action id of each batch."""
        ids = []
        for start in range(0, len(orders), ep.MAX_ORDERS_PER_IMPORT):
            batch = orders[start : start + ep.MAX_ORDERS_PER_IMPORT]
            ids.append(self._send(ep.import_orders(batch))["async_action_id"])
        return ids

    # -- redemptions --------------------------------------------------------------------------------

    def get_redemption(self, redemption_id: str) -> dict[str, Any]:
        """Fetch a redemption or a redemption rollback."""
        return self._send(ep.get_redemption(redemption_id))

    def get_voucher_redemptions(self, code: str) -> dict[str, Any]:
        """A voucher's redemption summary and entries (``GET /v1/vouchers/{code}/redemption``)."""
        return self._send(ep.get_voucher_redemptions(code))

    def rollback_redemption(
        self,
        redemption_id: str,
        *,
        reason: str | None = None,
        tracking_id: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Roll a successful redemption back."""
        return self._send(ep.rollback_redemption(redemption_id, reason=reason, tracking_id=tracking_id, body=body))

    def list_redemptions(
        self,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        result: str | None = None,
        campaign: str | None = None,
        customer: str | None = None,
        page_size: int = ep.MAX_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Redemptions newest first, through every page.

        The API serves at most 99 pages per query, so past that the window is narrowed to records
        created before the oldest one seen (overlapping by a millisecond; repeats are dropped).
        """
        before: datetime | str | None = created_before
        seen_at_edge: set[str] = set()
        edge_ids: set[str] = set()
        while True:
            oldest: str | None = None
            last_page_full = False
            for page in range(1, ep.MAX_REDEMPTION_PAGE + 1):
                body = self._send(ep.list_redemptions(
                    page_size, page, created_after=created_after, created_before=before, result=result,
                    campaign=campaign, customer=customer, order="-created_at",
                ))
                items = body.get("redemptions") or []
                for item in items:
                    if item["id"] in seen_at_edge:
                        continue
                    yield item
                    if oldest is None or item["date"] < oldest:
                        oldest, edge_ids = item["date"], set()
                    if item["date"] == oldest:
                        edge_ids.add(item["id"])
                last_page_full = len(items) == page_size
                if not last_page_full:
                    return
            if oldest is None:
                return
            # Page cap reached with more to come: continue below the oldest record seen.
            seen_at_edge = edge_ids
            before = plus_one_ms(oldest)

    # -- helpers ------------------------------------------------------------------------------------

    def _paginate(self, request_for_page: Any, data_ref: str) -> Iterator[dict[str, Any]]:
        page, seen = 1, 0
        while True:
            body = self._send(request_for_page(page))
            items = body.get(body.get("data_ref") or data_ref) or []
            yield from items
            seen += len(items)
            total = body.get("total")
            if not items or (isinstance(total, int) and seen >= total):
                return
            if page >= ep.MAX_PAGE_SIZE:
                self.log.warning("Voucherify %s listing stops at page %d (API cap); %s of %s listed. "
                                 "Use an export for complete data.", data_ref, page, seen, total)
                return
            page += 1


def _reached_server(exc: requests.RequestException) -> bool:
    """False only when the request provably never left: connect timeout, refused, DNS failure."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        if isinstance(reason, (NewConnectionError, NameResolutionError)):
            return False
    return True


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]
