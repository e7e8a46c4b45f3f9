import random

import pytest

from voucherify_provider.errors import VoucherifyConfigError, VoucherifySecurityError
from voucherify_provider.hooks._core import (
    ConnectionSettings,
    RateLimitState,
    RetryPolicy,
    redact_url,
    server_wait_hint,
)

pytestmark = pytest.mark.unit


def settings(host, **extra):
    return ConnectionSettings.from_connection("vc", "app", "tok", host, extra)


@pytest.mark.parametrize(
    ("host", "base", "download"),
    [
        ("EU", "https://api.voucherify.io:443", "https://download.voucherify.io:443"),
        ("us1", "https://us1.api.voucherify.io:443", "https://us1.download.voucherify.io:443"),
        ("AS1", "https://as1.api.voucherify.io:443", "https://as1.download.voucherify.io:443"),
        ("https://acme.api.voucherify.io", "https://acme.api.voucherify.io:443", "https://acme.download.voucherify.io:443"),
    ],
)
def test_clusters_and_download_hosts(host, base, download):
    s = settings(host)
    assert s.base_url.replace(":443", "") == base.replace(":443", "")
    assert download in s.download_origins
    s.check_download_url(download.replace(":443", "") + "/v1/exports/exp_1?token=x")


def test_plain_http_refused_except_loopback():
    assert settings("http://127.0.0.1:8089").base_url == "http://127.0.0.1:8089"
    assert settings("http://localhost:9").base_url == "http://localhost:9"
    with pytest.raises(VoucherifySecurityError, match="allow_insecure_http"):
        settings("http://voucherify.internal")
    assert settings("http://voucherify.internal", allow_insecure_http="true").base_url.startswith("http://")


def test_foreign_download_host_refused():
    s = settings("EU")
    with pytest.raises(VoucherifySecurityError, match="Refusing to send credentials"):
        s.check_download_url("https://evil.example.com/v1/exports/exp_1?token=abc")
    with pytest.raises(VoucherifySecurityError):
        s.check_download_url("http://download.voucherify.io/v1/exports/exp_1?token=abc")  # scheme downgrade


def test_missing_credentials_and_bad_host():
    with pytest.raises(VoucherifyConfigError, match=r"no password \(Secret Key\)"):
        ConnectionSettings.from_connection("vc", "app", None, "EU", {})
    with pytest.raises(VoucherifyConfigError, match="neither a cluster"):
        settings("eu-west")


def test_token_not_in_repr_and_redaction():
    s = settings("EU")
    assert "tok" not in repr(s)
    assert redact_url("https://d.io/v1/exports/e?token=SECRET&x=1") == "https://d.io/v1/exports/e?token=***&x=1"


def test_retry_policy_rules():
    p = RetryPolicy(rng=random.Random(1))
    assert p.delay_after_status(1, 400, {}, idempotent=True) is None
    assert p.delay_after_status(1, 404, {}, idempotent=True) is None
    assert p.delay_after_status(1, 500, {}, idempotent=False) is None
    assert p.delay_after_status(1, 500, {}, idempotent=True) is not None
    assert p.delay_after_status(1, 429, {"Retry-After": "7"}, idempotent=False) == 7.0
    assert p.delay_after_status(p.max_attempts, 503, {}, idempotent=True) is None
    assert p.delay_after_transport_error(1, reached_server=False, idempotent=False) is not None
    assert p.delay_after_transport_error(1, reached_server=True, idempotent=False) is None
    delays = [p.backoff(a) for a in range(1, 8)]
    assert all(0 <= d <= p.backoff_cap for d in delays)


def test_wait_hint_from_rate_limit_reset():
    assert server_wait_hint({"X-Rate-Limit-Retry": "12"}, now=1000) == 12
    assert server_wait_hint({"X-Rate-Limit-Retry": str(2_000_000_010)}, now=2_000_000_000) == 10


def test_rate_limit_pacing():
    state = RateLimitState()
    state.update({"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "50", "X-Rate-Limit-Retry": "2000000060"},
                 now=2_000_000_000)
    assert state.pause_before_next(now=2_000_000_000) == 0
    state.update({"X-Rate-Limit-Remaining": "5"}, now=2_000_000_000)
    assert state.pause_before_next(now=2_000_000_000) == pytest.approx(60 / 6)
    state.update({"X-Rate-Limit-Remaining": "0"}, now=2_000_000_000)
    assert state.pause_before_next(now=2_000_000_000) == pytest.approx(60)


def test_error_mapping_and_messages():
    from voucherify_provider.errors import (
        VoucherifyApiError,
        VoucherifyAuthError,
        VoucherifyNotFoundError,
        VoucherifyRateLimitError,
    )

    forbidden = VoucherifyApiError.from_body(403, {"code": 403, "message": "Forbidden"}, operation="get_export")
    assert isinstance(forbidden, VoucherifyAuthError) and "cluster" in str(forbidden)
    assert isinstance(VoucherifyApiError.from_body(404, {"code": 404, "message": "x"}), VoucherifyNotFoundError)
    assert isinstance(VoucherifyApiError.from_body(429, {"code": 429, "message": "x"}), VoucherifyRateLimitError)
    html = VoucherifyApiError.from_body(502, "<html>Bad gateway</html>", operation="get_export")
    assert str(html) == "Voucherify get_export failed: 502: <html>Bad gateway</html>"
    full = VoucherifyApiError.from_body(
        400, {"code": 400, "key": "invalid_export_fields", "message": "Invalid Export",
              "details": "Unsupported field used.", "request_id": "v-0afdb603910a1a14e0"})
    assert str(full) == ("400 invalid_export_fields: Invalid Export: Unsupported field used. "
                         "(request v-0afdb603910a1a14e0)")
    assert full.details == "Unsupported field used." and full.request_id == "v-0afdb603910a1a14e0"
