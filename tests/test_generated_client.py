"""A client generated from Voucherify's own OpenAPI specs (pydantic models, strict nullability) must
deserialize every emulator response: the emulator is spec-exact, not just good enough for our hook."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.support.contract import SPECS
from tests.support.exports import wait_done


def _generate(name: str, out_dir: Path) -> ModuleType:
    target = out_dir / f"voucherify_{name}_models.py"
    codegen = Path(sys.executable).parent / "datamodel-codegen"
    subprocess.run(
        [str(codegen), "--input", str(SPECS / f"{name}.json"), "--input-file-type",
         "openapi", "--output", str(target), "--output-model-type", "pydantic_v2.BaseModel", "--strict-nullable"],
        check=True, capture_output=True, timeout=300,
    )
    spec = importlib.util.spec_from_file_location(target.stem, target)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[target.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    return {name: _generate(name, out) for name in ("exports", "orders", "redemptions")}


@pytest.fixture
def api(emu):
    headers = {"X-App-Id": emu.config.app_id, "X-App-Token": emu.config.app_token}
    with httpx.Client(base_url=emu.base_url, headers=headers, timeout=30) as client:
        yield client


def test_generated_models_are_strict(models):
    with pytest.raises(ValueError):
        models["exports"].ExportsGetResponseBody.model_validate({"id": "exp_1", "status": "DONE"})


def test_exports(models, api):
    ex = models["exports"]
    for name in ("voucher", "redemption", "publication", "customer", "order", "points_expiration",
                 "voucher_transactions"):
        created = api.post("/v1/exports", json={"exported_object": name}).json()
        ex.ExportsCreateResponseBody.model_validate(created)
        ex.ExportsGetResponseBody.model_validate(api.get(f"/v1/exports/{created['id']}").json())
        done = wait_done(type("H", (), {"get_export": lambda self, i: api.get(f"/v1/exports/{i}").json()})(),
                         created["id"])
        assert ex.ExportsGetResponseBody.model_validate(done).root.status.value == "DONE"
    ex.ExportsListResponseBody.model_validate(api.get("/v1/exports", params={"limit": 100}).json())
    ex.Error.model_validate(api.get("/v1/exports/exp_missing").json())


def test_orders(models, api):
    od = models["orders"]
    od.OrdersExportCreateResponseBody.model_validate(api.post("/v1/orders/export", json={}).json())
    created = api.post("/v1/orders", json={"source_id": "gen-1", "amount": 500, "status": "PAID"}).json()
    od.OrdersCreateResponseBody.model_validate(created)
    od.OrdersGetResponseBody.model_validate(api.get(f"/v1/orders/{created['id']}").json())
    od.OrdersUpdateResponseBody.model_validate(api.put(f"/v1/orders/{created['id']}", json={"amount": 9}).json())
    od.OrdersListResponseBody.model_validate(api.get("/v1/orders", params={"limit": 100}).json())
    od.OrdersImportCreateResponseBody.model_validate(api.post("/v1/orders/import", json=[{"source_id": "g"}]).json())


def test_redemptions(models, api):
    rd = models["redemptions"]
    listed = api.get("/v1/redemptions", params={"limit": 100}).json()
    rd.RedemptionsListResponseBody.model_validate(listed)
    for item in listed["redemptions"][:40]:
        rd.RedemptionsGetResponseBody.model_validate(api.get(f"/v1/redemptions/{item['id']}").json())
    code = listed["redemptions"][0]["voucher"]["code"]
    rd.VouchersRedemptionGetResponseBody.model_validate(api.get(f"/v1/vouchers/{code}/redemption").json())
    target = next(r for r in listed["redemptions"] if r["object"] == "redemption" and r["status"] == "SUCCEEDED")
    rd.RedemptionsRollbackCreateResponseBody.model_validate(
        api.post(f"/v1/redemptions/{target['id']}/rollback", json={}).json())
