"""Contract tests: the emulator's responses and the hook's request bodies follow Voucherify's specs."""

from __future__ import annotations

import httpx
import pytest
from jsonschema import ValidationError

from tests.support.contract import check_request, check_response
from tests.support.exports import wait_done, window_filter
from voucherify_provider import catalog
from voucherify_provider.hooks import _endpoints as ep

pytestmark = pytest.mark.unit


@pytest.fixture
def api(emu):
    headers = {"X-App-Id": emu.config.app_id, "X-App-Token": emu.config.app_token}
    with httpx.Client(base_url=emu.base_url, headers=headers, timeout=30) as client:
        yield client


def test_the_validator_catches_a_wrong_body():
    with pytest.raises(ValidationError):
        check_response("exports", "get", "/v1/exports/{exportId}", 200, {"id": "exp_1", "status": "BOGUS"})
    with pytest.raises(ValidationError):
        check_request("exports", "post", "/v1/exports", {"exported_object": "redemption",
                                                         "parameters": {"fields": ["not_a_field"]}})


@pytest.mark.parametrize("name", list(catalog.OBJECTS))
def test_export_lifecycle_responses(api, emu, name):
    obj = catalog.OBJECTS[name]
    fields = [f for f in obj.fields if f not in ("code", "status")] if name in ("publication",
                                                                                 "voucher_transactions") else None
    request = ep.create_export(name, fields=fields, order=obj.allowed_orders[0],
                               filters=window_filter("2024-01-02T00:00:00.000Z", "2024-01-03T00:00:00.000Z")
                               if obj.windowable else None)
    check_request("exports", "post", "/v1/exports", request.json)
    created = api.post("/v1/exports", json=request.json)
    assert created.status_code == 200
    check_response("exports", "post", "/v1/exports", 200, created.json())
    assert created.json()["status"] == "SCHEDULED"
    export_id = created.json()["id"]
    got = api.get(f"/v1/exports/{export_id}")
    check_response("exports", "get", "/v1/exports/{exportId}", 200, got.json())
    done = wait_done(type("H", (), {"get_export": lambda self, i: api.get(f"/v1/exports/{i}").json()})(), export_id)
    check_response("exports", "get", "/v1/exports/{exportId}", 200, done)
    listed = api.get("/v1/exports", params={"limit": 100, "page": 1, "order": "-created_at"})
    check_response("exports", "get", "/v1/exports", 200, listed.json())
    download = httpx.get(done["result"]["url"], headers=api.headers)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/plain")
    assert api.delete(f"/v1/exports/{export_id}").status_code == 204


def test_export_error_bodies(api, emu):
    bad_field = api.post("/v1/exports", json={"exported_object": "redemption", "parameters": {"fields": ["x"]}})
    assert bad_field.status_code == 400 and bad_field.json()["key"] == "invalid_export_fields"
    check_response("exports", "post", "/v1/exports", 400, bad_field.json())
    bad_object = api.post("/v1/exports", json={"exported_object": "coupon"})
    assert bad_object.status_code == 400 and bad_object.json()["key"] == "invalid_payload"
    check_response("exports", "post", "/v1/exports", 400, bad_object.json())
    missing = api.get("/v1/exports/exp_missing")
    assert missing.status_code == 404
    check_response("exports", "get", "/v1/exports/{exportId}", 404, missing.json())
    assert missing.json()["details"] == "Cannot find export with id exp_missing"
    check_response("exports", "delete", "/v1/exports/{exportId}", 404, api.delete("/v1/exports/exp_missing").json())
    bad_token = api.get("/v1/exports/exp_missing", params={"token": "nope"})
    assert bad_token.status_code == 401
    assert bad_token.json() == {"code": 401, "message": "Unauthorized", "key": "unauthorized"}
    check_response("exports", "get", "/v1/exports/{export_Id}", 401, bad_token.json())
    unauthenticated = httpx.get(f"{emu.base_url}/v1/exports")
    assert unauthenticated.status_code == 401
    check_response("exports", "get", "/v1/exports", 401, unauthenticated.json())


def test_rate_limit_headers_and_429_body(api, emu):
    emu.configure(rate_limit_per_minute=2)
    first = api.get("/v1/exports")
    assert {"x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-retry"} <= set(first.headers)
    api.get("/v1/exports")
    blocked = api.get("/v1/exports")
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert blocked.json() == {"code": 429, "message": "Too many requests hit the API too quickly."}
    check_response("exports", "get", "/v1/exports", 429, blocked.json())


def test_orders_responses(api, emu):
    body = {"source_id": "contract-1", "amount": 1000, "status": "CREATED", "metadata": {"k": "v"},
            "customer": {"source_id": "cust-src-1"}}
    check_request("orders", "post", "/v1/orders", ep.create_order(body).json)
    created = api.post("/v1/orders", json=body)
    check_response("orders", "post", "/v1/orders", 200, created.json())
    order_id = created.json()["id"]
    check_response("orders", "get", "/v1/orders/{orderId}", 200, api.get(f"/v1/orders/{order_id}").json())
    update = ep.update_order(order_id, {"status": "PAID"})
    check_request("orders", "put", "/v1/orders/{orderId}", update.json)
    updated = api.put(f"/v1/orders/{order_id}", json=update.json)
    check_response("orders", "put", "/v1/orders/{orderId}", 200, updated.json())
    check_response("orders", "get", "/v1/orders", 200, api.get("/v1/orders", params={"limit": 50}).json())
    imported = ep.import_orders([{"source_id": "imp-1", "amount": 5, "status": "PAID"}])
    check_request("orders", "post", "/v1/orders/import", imported.json)
    check_response("orders", "post", "/v1/orders/import", 200, api.post("/v1/orders/import", json=imported.json).json())
    export = ep.create_orders_export(fields=["id", "amount"], order="-created_at",
                                     filters=window_filter("2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"))
    check_request("orders", "post", "/v1/orders/export", export.json)
    check_response("orders", "post", "/v1/orders/export", 200, api.post("/v1/orders/export", json=export.json).json())
    check_response("orders", "post", "/v1/orders/export", 200, api.post("/v1/orders/export", json={}).json())
    missing = api.get("/v1/orders/ord_missing")
    assert missing.status_code == 404
    check_response("orders", "get", "/v1/orders/{orderId}", 404, missing.json())


def test_redemptions_responses(api, emu):
    listed = api.get("/v1/redemptions", params={"limit": 100, "created_at[after]": "2024-01-01T00:00:00Z"})
    check_response("redemptions", "get", "/v1/redemptions", 200, listed.json())
    items = listed.json()["redemptions"]
    kinds = {r["object"] for r in items}
    assert kinds == {"redemption", "redemption_rollback"}
    for item in items[:30]:
        check_response("redemptions", "get", "/v1/redemptions/{redemptionId}", 200,
                       api.get(f"/v1/redemptions/{item['id']}").json())
    code = items[0]["voucher"]["code"]
    check_response("redemptions", "get", "/v1/vouchers/{code}/redemption", 200,
                   api.get(f"/v1/vouchers/{code}/redemption").json())
    target = next(r for r in items if r["object"] == "redemption" and r["status"] == "SUCCEEDED")
    rollback = ep.rollback_redemption(target["id"], reason="contract")
    check_request("redemptions", "post", "/v1/redemptions/{redemptionId}/rollback", rollback.json)
    done = api.post(f"/v1/redemptions/{target['id']}/rollback", params={"reason": "contract"}, json={})
    check_response("redemptions", "post", "/v1/redemptions/{redemptionId}/rollback", 200, done.json())
    again = api.post(f"/v1/redemptions/{target['id']}/rollback", json={})
    assert again.status_code == 400
    check_response("redemptions", "post", "/v1/redemptions/{redemptionId}/rollback", 400, again.json())
    too_far = api.get("/v1/redemptions", params={"page": 100})
    assert too_far.status_code == 400
    check_response("redemptions", "get", "/v1/redemptions", 400, too_far.json())


def test_hook_request_bodies_for_every_object_and_option():
    for name, obj in catalog.OBJECTS.items():
        spec_fields = [f for f in obj.fields if not (name == "publication" and f == "code")
                       and not (name == "voucher_transactions" and f == "status")]
        for order in obj.allowed_orders:
            check_request("exports", "post", "/v1/exports",
                          ep.create_export(name, fields=spec_fields, order=order).json)
        check_request("exports", "post", "/v1/exports", ep.create_export(name).json)
