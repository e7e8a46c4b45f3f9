"""Transport-independent rules shared by the sync and the async hook.

One implementation of each rule: where the API lives and which hosts may see the credentials, how a
request is described, how an error body becomes an exception, when and how long to retry, and how
rate-limit headers slow us down. The sync hook (requests) and the async hook (httpx) only move bytes.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from voucherify_provider import __version__
from voucherify_provider.errors import (
    VoucherifyApiError,
    VoucherifyConfigError,
    VoucherifySecurityError,
    VoucherifyTransportError,
)

CLUSTERS: dict[str, tuple[str, str]] = {
    "EU": ("api.voucherify.io", "download.voucherify.io"),
    "US1": ("us1.api.voucherify.io", "us1.download.voucherify.io"),
    "AS1": ("as1.api.voucherify.io", "as1.download.voucherify.io"),
}
USER_AGENT = f"airflow-provider-voucherify/{__version__}"
SECRET_QUERY_KEYS = frozenset({"token", "access_token"})
if TYPE_CHECKING:
    from airflow.sdk.definitions.connection import Connection

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ApiRequest:
    """One API call, described once and sent by either transport."""

    operation: str
    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    # Safe to resend after the server may have seen it (reads, upserts, deletes).
    idempotent: bool = True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(scheme: str, host: str, port: int | None) -> str:
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}:{port or default}"


def redact_url(url: str) -> str:
    """Return ``url`` with secret query values (the download ``token``) replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def url_secrets(url: str) -> list[str]:
    """Secret values carried in a URL's query string (to register with the secrets masker)."""
    return [v for k, v in parse_qsl(urlsplit(url).query, True) if k.lower() in SECRET_QUERY_KEYS and v]


_TOKEN_IN_TEXT = re.compile(r"((?:^|[?&\s])(?:token|access_token)=)[^&\s\"']+", re.IGNORECASE)


class _RedactUrlTokens(logging.Filter):
    """Rewrites log records of HTTP libraries so a download ``token=`` never reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_IN_TEXT.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction() -> None:
    """Attach the token-redacting filter to the loggers of urllib3 and httpx (idempotent)."""
    for name in ("urllib3.connectionpool", "httpx", "httpcore.http11"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactUrlTokens) for f in logger.filters):
            logger.addFilter(_RedactUrlTokens())


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the transports need from an Airflow connection, validated once."""

    app_id: str
    app_token: str = field(repr=False)
    base_url: str
    download_origins: frozenset[str]
    api_version: str | None = None
    verify_tls: bool = True
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    conn_id: str = "voucherify_default"

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        login: str | None,
        password: str | None,
        host: str | None,
        extra: Mapping[str, Any],
    ) -> ConnectionSettings:
        """Validate a connection's fields; raise a config error naming what to fix."""
        if not login or not password:
            missing = " and ".join(n for n, v in (("login (Application ID)", login),
                                                  ("password (Secret Key)", password)) if not v)
            raise VoucherifyConfigError(
                f"Connection {conn_id!r} has no {missing}. Set them in the connection "
                "(UI: Admin > Connections, or AIRFLOW_CONN_" + conn_id.upper() + ")."
            )
        base_url, download = cls._resolve_hosts(conn_id, (host or "EU").strip(), extra)
        return cls(
            app_id=login,
            app_token=password,
            base_url=base_url,
            download_origins=download,
            api_version=extra.get("api_version") or None,
            verify_tls=_as_bool(extra.get("verify_tls", True)),
            connect_timeout=float(extra.get("connect_timeout") or 10.0),
            read_timeout=float(extra.get("timeout") or 60.0),
            conn_id=conn_id,
        )

    @staticmethod
    def _resolve_hosts(conn_id: str, host: str, extra: Mapping[str, Any]) -> tuple[str, frozenset[str]]:
        cluster = host.upper()
        if cluster in CLUSTERS:
            api, download = CLUSTERS[cluster]
            return f"https://{api}", frozenset({_origin("https", download, None)})
        if "://" not in host:
            raise VoucherifyConfigError(
                f"Connection {conn_id!r} host {host!r} is neither a cluster ({', '.join(CLUSTERS)}) nor a "
                "base URL with its scheme, e.g. https://acme.api.voucherify.io or http://127.0.0.1:8089."
            )
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VoucherifyConfigError(f"Connection {conn_id!r} host {host!r} is not an http(s) URL.")
        if parts.scheme == "http" and not _is_loopback(parts.hostname) and not _as_bool(
            extra.get("allow_insecure_http", False)
        ):
            raise VoucherifySecurityError(
                f"Connection {conn_id!r} uses plain http:// to {parts.hostname}, which would send the "
                "Secret Key unencrypted. Use https://, or set extra allow_insecure_http=true if you "
                "really mean it (plain http is accepted without it only for loopback hosts)."
            )
        api_origin = _origin(parts.scheme, parts.hostname, parts.port)
        origins = {api_origin}  # the emulator and proxies serve downloads on the API host itself
        if extra.get("download_host"):
            dl = str(extra["download_host"])
            dl_parts = urlsplit(dl if "://" in dl else f"https://{dl}")
            origins.add(_origin(dl_parts.scheme, dl_parts.hostname or "", dl_parts.port))
        elif parts.hostname.startswith("api.") or ".api." in parts.hostname:
            # dedicated clusters follow the public naming: acme.api.voucherify.io -> acme.download...
            dl_host = parts.hostname.replace("api.", "download.", 1)
            origins.add(_origin("https", dl_host, None))
        return api_origin + parts.path.rstrip("/"), frozenset(origins)

    def headers(self) -> dict[str, str]:
        """Authentication and identification headers sent on every call to an allowed host."""
        headers = {
            "X-App-Id": self.app_id,
            "X-App-Token": self.app_token,
            "User-Agent": USER_AGENT,
            "X-Voucherify-Channel": USER_AGENT,
            "Accept": "application/json",
        }
        if self.api_version:
            headers["X-Voucherify-API-Version"] = self.api_version
        return headers

    def url_for(self, path: str) -> str:
        """Absolute URL of an API path."""
        return f"{self.base_url}{path}"

    def check_download_url(self, url: str) -> str:
        """Refuse a download URL whose host may not see the credentials; return it unchanged."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VoucherifySecurityError(f"Export download URL {redact_url(url)!r} is not an http(s) URL.")
        origin = _origin(parts.scheme, parts.hostname, parts.port)
        if origin not in self.download_origins:
            raise VoucherifySecurityError(
                f"Refusing to send credentials to {origin}: the export's download URL is not on this "
                f"connection's API or download host ({', '.join(sorted(self.download_origins))}). If "
                "your project is on a dedicated cluster, set the connection extra download_host."
            )
        return url


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass
class RetryPolicy:
    """When to retry and how long to wait: exponential backoff with full jitter, server hints first.

    * connect failures (the request provably never reached the server): always retried;
    * 429: always retried; the rate limiter rejects a request before it is processed;
    * 5xx, read timeouts, broken connections: retried only for idempotent requests;
    * any other 4xx: never retried.
    """

    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    # A server asking us to wait longer than this is treated as a hard limit, not a hiccup.
    max_server_wait: float = 900.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential delay before retry number ``attempt`` (1-based)."""
        return self.rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))

    def delay_after_status(
        self, attempt: int, status: int, headers: Mapping[str, str], idempotent: bool
    ) -> float | None:
        """Seconds to wait before retrying a response with ``status``, or None to give up."""
        if attempt >= self.max_attempts or status not in RETRY_STATUSES:
            return None
        if status != 429 and not idempotent:
            return None
        hinted = server_wait_hint(headers)
        if hinted is not None:
            return hinted if hinted <= self.max_server_wait else None
        return self.backoff(attempt)

    def delay_after_transport_error(self, attempt: int, *, reached_server: bool, idempotent: bool) -> float | None:
        """Seconds to wait before retrying a failed connection, or None to give up."""
        if attempt >= self.max_attempts or (reached_server and not idempotent):
            return None
        return self.backoff(attempt)


def server_wait_hint(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Wait the server asks for: ``Retry-After`` seconds, else ``X-Rate-Limit-Retry`` (Unix time)."""
    retry_after = _header(headers, "Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    reset = _header(headers, "X-Rate-Limit-Retry")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        now = time.time() if now is None else now
        # Documented as Unix seconds; a small number is read as a delay in seconds.
        return max(0.0, value - now) if value > 1e9 else max(0.0, value)
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


@dataclass
class RateLimitState:
    """The last ``X-Rate-Limit-*`` values seen, and how long to pause so we never hit a 429."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    limit_type: str | None = None
    # Start pacing when fewer than this share of the window's calls remain.
    low_water_ratio: float = 0.1

    def update(self, headers: Mapping[str, str], now: float | None = None) -> None:
        """Record the rate-limit headers of a response."""
        now = time.time() if now is None else now
        for attr, name in (("limit", "X-Rate-Limit-Limit"), ("remaining", "X-Rate-Limit-Remaining")):
            raw = _header(headers, name)
            if raw is not None:
                try:
                    setattr(self, attr, int(float(raw)))
                except ValueError:
                    pass
        raw_reset = _header(headers, "X-Rate-Limit-Retry")
        if raw_reset is not None:
            try:
                value = float(raw_reset)
                self.reset_at = value if value > 1e9 else now + value
            except ValueError:
                pass
        self.limit_type = _header(headers, "X-Rate-Limit-Type") or self.limit_type

    def pause_before_next(self, now: float | None = None) -> float:
        """Seconds to wait before the next call: spread the calls left over the time left."""
        if self.remaining is None or self.limit is None or self.reset_at is None:
            return 0.0
        now = time.time() if now is None else now
        left = self.reset_at - now
        if left <= 0:
            return 0.0
        low_water = max(1, int(self.limit * self.low_water_ratio))
        if self.remaining > low_water:
            return 0.0
        if self.remaining <= 0:
            return left
        return left / (self.remaining + 1)


class CallAttempts:
    """The retry loop's decisions for one call, shared by both transports.

    A transport loops: wait :meth:`pause`, send, then ask :meth:`after_response` or
    :meth:`after_transport_error` how long to wait before the next attempt; both raise when giving up.
    """

    def __init__(self, policy: RetryPolicy, rate_limit: RateLimitState, request_name: str, url: str,
                 idempotent: bool, log: logging.Logger | Any) -> None:
        self.policy, self.rate_limit, self.operation = policy, rate_limit, request_name
        self.url, self.idempotent, self.log = url, idempotent, log
        self.attempt = 0

    def pause(self) -> float:
        """Seconds to wait before the next attempt so the rate limit is never exceeded."""
        self.attempt += 1
        pause = self.rate_limit.pause_before_next()
        if pause > 0:
            self.log.info("Voucherify rate limit nearly used up; pausing %.1fs before %s", pause, self.operation)
        return pause

    def after_response(self, status: int, headers: Mapping[str, str], body: Any) -> float | None:
        """None when the response is a success; else the delay before retrying. Raises when giving up.

        ``body`` is a callable returning the decoded error body (read only for errors).
        """
        self.rate_limit.update(headers)
        if status < 400:
            return None
        delay = self.policy.delay_after_status(self.attempt, status, headers, self.idempotent)
        if delay is None:
            raise VoucherifyApiError.from_body(status, body(), operation=self.operation)
        self.log.warning("Voucherify %s: HTTP %d; retry %d in %.1fs", self.operation, status, self.attempt, delay)
        return delay

    def after_transport_error(self, error_name: str, reached_server: bool) -> float:
        """Delay before retrying a failed connection; raises when giving up."""
        delay = self.policy.delay_after_transport_error(
            self.attempt, reached_server=reached_server, idempotent=self.idempotent)
        if delay is None:
            raise VoucherifyTransportError(
                f"{error_name} calling {redact_url(self.url)} after {self.attempt} attempt(s)",
                operation=self.operation,
            )
        self.log.warning("Voucherify %s: %s; retry %d in %.1fs", self.operation, error_name, self.attempt, delay)
        return delay


def mask_secret(value: str) -> None:
    """Register a value with Airflow's secrets masker (task logs, supervisor and triggerer)."""
    try:
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:  # pragma: no cover
        return
    _mask(value)


def settings_from_connection(conn: Connection) -> ConnectionSettings:
    """Validated settings of an Airflow connection, its secret registered with the masker."""
    settings = ConnectionSettings.from_connection(
        conn.conn_id, conn.login, conn.password, conn.host, conn.extra_dejson or {}
    )
    mask_secret(settings.app_token)
    install_log_redaction()
    return settings


def missing_connection(conn_id: str) -> str:
    """What to say about a connection id Airflow does not know: how to create it."""
    return (f"Connection {conn_id!r} is not defined. Create it with conn type 'voucherify' (UI: Admin > "
            f"Connections, or the AIRFLOW_CONN_{conn_id.upper()} environment variable), or pass the "
            "voucherify_conn_id of an existing one.")


def export_urls(export: Mapping[str, Any]) -> list[str]:
    """File URLs of a DONE export: ``result.url``, or several when Voucherify split the result.

    No schema documents the split, so every plausible shape is accepted: ``result.urls`` (list),
    ``result.url`` holding a list, or ``result.files``/``result.chunks`` of ``{"url": ...}`` objects.
    """
    result = export.get("result") or {}
    if not isinstance(result, Mapping):
        return []
    candidates: list[Any] = []
    for key in ("urls", "files", "chunks"):
        value = result.get(key)
        if isinstance(value, list) and value:
            candidates = value
            break
    if not candidates:
        url = result.get("url")
        candidates = url if isinstance(url, list) else [url] if url else []
    urls = [c.get("url") if isinstance(c, Mapping) else c for c in candidates]
    return [u for u in urls if isinstance(u, str) and u]


def mask_export_tokens(export: Mapping[str, Any]) -> None:
    """Register the download tokens in an export's result URLs with the secrets masker."""
    for url in export_urls(export):
        for secret in url_secrets(url):
            mask_secret(secret)
