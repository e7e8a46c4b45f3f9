"""Money lands exactly as the API gives it (integers in the smallest currency unit), with its unit said
where a reader looks: the Parquet field metadata and the manifest's schema."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from tests.support.operators import context, done_export, land
from voucherify_provider import catalog
from voucherify_provider.catalog import MINOR_UNIT

pytestmark = pytest.mark.unit


def test_landed_amounts_equal_the_api_integers_and_say_their_unit(emu, hook, tmp_path):
    export_id = done_export(emu, hook, "order", fields=["id", "created_at", "amount", "total_amount"])
    manifest = land(tmp_path, export_id, exported_object="order").execute(context())
    partition = tmp_path / "order" / manifest["partition"].rsplit("/", 1)[1]
    table = pq.read_table(next(partition.glob("*.parquet")))
    assert table.num_rows > 0
    for row in table.to_pylist()[:20]:
        api = hook.get_order(row["id"])  # the orders API's JSON: integer cents
        assert isinstance(api["amount"], int)
        assert row["amount"] == Decimal(api["amount"]) and row["total_amount"] == Decimal(api["total_amount"])
    field = table.schema.field("amount")
    assert field.metadata[b"voucherify_unit"].decode() == MINOR_UNIT
    assert b"voucherify_unit" not in (table.schema.field("id").metadata or {})
    written = json.loads((partition / "_manifest.json").read_text())
    units = {c["name"]: c.get("voucherify_unit") for c in written["schema"]}
    assert units == {"id": None, "created_at": None, "amount": MINOR_UNIT, "total_amount": MINOR_UNIT}


def test_the_emulator_writes_amounts_as_the_export_documents_show(emu, hook):
    export_id = done_export(emu, hook, "order", fields=["id", "created_at", "amount"])
    export = hook.get_export(export_id)
    body = b"".join(b"".join(part.iter_bytes()) for part in hook.download_export(export_id, export)).decode()
    amounts = [line.split(",")[2] for line in body.splitlines()[1:] if line]
    assert amounts and all(a.endswith(".00") and int(a[:-3]) >= 1000 for a in amounts)  # 7700.00, not 77.00


def test_every_money_field_has_a_unit_and_only_money_fields_do():
    for obj in catalog.OBJECTS.values():
        for key, kind in obj.fields.items():
            assert (obj.unit(key) is not None) == (kind is catalog.FieldType.MONEY), (obj.name, key)
    assert "PERCENT" in (catalog.get_object("voucher").unit("value") or "")
