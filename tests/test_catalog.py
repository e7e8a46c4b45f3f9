import json

import pytest

from tests.support.contract import SPECS
from voucherify_provider import catalog

pytestmark = pytest.mark.unit

SPEC = SPECS / "exports.json"
ENUM_NAMES = {
    "order": "ExportOrder", "voucher": "ExportVoucher", "publication": "ExportPublication",
    "redemption": "ExportRedemption", "customer": "ExportCustomer",
    "points_expiration": "ExportPointsExpiration", "voucher_transactions": "ExportVoucherTransactions",
}


@pytest.fixture(scope="module")
def spec_schemas():
    return json.loads(SPEC.read_text())["components"]["schemas"]


@pytest.mark.parametrize("name", sorted(ENUM_NAMES))
def test_catalog_covers_spec_fields_and_orders(spec_schemas, name):
    obj = catalog.get_object(name)
    spec_fields = set(spec_schemas[f"{ENUM_NAMES[name]}Fields"]["enum"])
    assert spec_fields <= set(obj.fields), spec_fields - set(obj.fields)
    assert set(spec_schemas[f"{ENUM_NAMES[name]}Order"]["enum"]) == set(obj.allowed_orders)


def test_seven_objects_with_documented_defaults():
    assert list(catalog.OBJECTS) == [
        "order", "voucher", "publication", "redemption", "customer", "points_expiration", "voucher_transactions",
    ]
    defaults = catalog.OBJECTS["redemption"].default_fields
    assert defaults == ("id", "object", "voucher_code", "customer_id", "date", "result")
    assert not catalog.OBJECTS["points_expiration"].windowable


def test_unknown_field_names_the_field_and_suggests():
    with pytest.raises(catalog.UnknownFieldError) as err:
        catalog.get_object("redemption").validate_fields(["id", "vouchr_code"])
    assert "'vouchr_code'" in str(err.value) and "Did you mean 'voucher_code'" in str(err.value)
    assert "Allowed fields:" in str(err.value)


def test_metadata_property_fields_are_strings():
    obj = catalog.get_object("customer")
    assert obj.validate_fields(["id", "metadata.tier"]) == ("id", "metadata.tier")
    assert obj.field_type("metadata.tier") is catalog.FieldType.STRING
    with pytest.raises(catalog.CatalogError):
        obj.validate_fields(["metadata."])


def test_unknown_object_and_bad_order():
    with pytest.raises(catalog.CatalogError, match="Did you mean 'redemption'"):
        catalog.get_object("redemptions")
    with pytest.raises(catalog.CatalogError, match="allowed: created_at, -created_at"):
        catalog.get_object("voucher_transactions").validate_order("amount")


def test_labels_are_human_readable():
    obj = catalog.get_object("voucher")
    assert [obj.label(f) for f in ("id", "code", "voucher_type", "value")] == ["ID", "Code", "Voucher Type", "Value"]


def test_distinct_fields_start_with_the_key_and_name_real_fields():
    for obj in catalog.OBJECTS.values():
        assert obj.distinct_fields[0] == obj.key_field
        assert set(obj.distinct_fields) <= set(obj.fields)
    assert catalog.OBJECTS["voucher"].distinct_fields == ("id", "code")
    assert catalog.OBJECTS["order"].distinct_fields == ("id", "source_id")
