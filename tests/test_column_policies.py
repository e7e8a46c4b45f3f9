"""Column policies: dropped columns never land, hashed ones land as keyed HMAC-SHA256 (strings), the policy is
recorded in the manifest and the Parquet field metadata, and neither the key nor a personal value reaches
a message."""

from __future__ import annotations

import base64
import hmac
import json

import pyarrow.parquet as pq
import pytest

from tests.support.operators import context, done_export, land
from voucherify_provider import catalog
from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.outcomes import airflow_exception
from voucherify_provider.privacy import key_id, parse_policies

pytestmark = pytest.mark.unit

KEY = "column-policy-key-0123456789abcdef"
CUSTOMER_FIELDS = ["id", "created_at", "email", "phone", "birthdate", "source_id", "orders_total_amount"]
PARTITION = "window_start=20240102T000000Z"
POLICIES = {"email": "hash", "phone": "drop", "birthdate": "hash", "source_id": "hash"}


def _hmac(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), "sha256").hexdigest()


@pytest.fixture
def hash_key(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_HASH_KEY", json.dumps({"conn_type": "generic", "password": KEY}))
    return "voucherify_hash_key"


def _landed_customers(emu, hook, tmp_path, **kwargs):
    export_id = done_export(emu, hook, "customer", fields=CUSTOMER_FIELDS)
    manifest = land(tmp_path, export_id, exported_object="customer", **kwargs).execute(context())
    files = [tmp_path / "customer" / PARTITION / f["path"] for f in manifest["files"]]
    return manifest, files


def test_drop_and_hash_while_landing(emu, hook, tmp_path, hash_key):
    manifest, files = _landed_customers(
        emu, hook, tmp_path, column_policies=POLICIES, hash_key_conn_id=hash_key)
    table = pq.read_table(files[0])
    assert table.column_names == ["id", "created_at", "email", "birthdate", "source_id", "orders_total_amount"]
    truth = {r["id"]: r for r in emu.state("customer", ["id", "email", "birthdate", "source_id"])}
    assert table.num_rows > 0
    for row in table.to_pylist():
        record = truth[row["id"]]
        assert row["email"] == _hmac(record["email"]) and row["source_id"] == _hmac(record["source_id"])
        assert row["birthdate"] == _hmac(record["birthdate"])  # the exported text, hashed; typed as a string
    email = table.schema.field("email")
    assert str(email.type) == "string" and str(table.schema.field("birthdate").type) == "string"
    assert email.metadata[b"voucherify_policy"] == b"hash" and email.metadata[b"voucherify_hash"] == b"HMAC-SHA256"
    assert email.metadata[b"voucherify_hash_key_id"] == key_id(KEY.encode()).encode()
    assert json.loads(table.schema.metadata[b"voucherify.column_policies"]) == POLICIES
    assert manifest["column_policies"] == POLICIES
    assert manifest["hash"] == {"algorithm": "HMAC-SHA256", "key_id": key_id(KEY.encode()),
                                "of": "the value's exported text"}
    assert [c["name"] for c in manifest["schema"]] == table.column_names
    # The key is nowhere in what landed, nor any clear email.
    for path in (tmp_path / "customer").rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            assert KEY.encode() not in body
            assert not [r["email"] for r in truth.values() if r["email"].encode() in body]


def test_the_personal_data_preset_follows_the_catalog(emu, hook, tmp_path, hash_key):
    manifest, files = _landed_customers(emu, hook, tmp_path, column_policies="personal_data",
                                        hash_key_conn_id=hash_key)
    names = pq.read_schema(files[0]).names
    assert names == ["id", "created_at", "email", "phone", "source_id", "orders_total_amount"]
    assert manifest["column_policies"] == catalog.get_object("customer").personal


def test_hashes_join_across_objects(emu, hook, tmp_path, hash_key):
    """A customer's source_id (their email in the emulator, as often in real projects) hashes to the same
    value as their redemptions' customer_source_id."""
    snapshot = done_export(emu, hook, "customer", fields=CUSTOMER_FIELDS, windowed=False)
    everyone = land(tmp_path, snapshot, exported_object="customer", column_policies="personal_data",
                    hash_key_conn_id=hash_key).execute(context())
    customers = [f"{everyone['partition']}/{f['path']}" for f in everyone["files"]]
    redemption = done_export(emu, hook, "redemption", fields=["id", "date", "customer_id", "customer_source_id"])
    landed = land(tmp_path, redemption, exported_object="redemption", column_policies="personal_data",
                  hash_key_conn_id=hash_key).execute(context())
    redemptions = pq.read_table(tmp_path / "redemption" / PARTITION / landed["files"][0]["path"]).to_pylist()
    by_customer = {r["id"]: r["source_id"] for r in pq.read_table(customers[0]).to_pylist()}
    shared = [r for r in redemptions if r["customer_id"] in by_customer]
    truth = {r["id"]: r for r in emu.state("redemption", ["id", "customer_source_id"])}
    assert all(r["customer_source_id"] == _hmac(truth[r["id"]]["customer_source_id"]) for r in redemptions)
    assert shared and all(r["customer_source_id"] == by_customer[r["customer_id"]] for r in shared)


def test_a_bad_value_in_a_personal_column_is_not_printed(emu, hook, tmp_path, capfd):
    export_id = done_export(emu, hook, "customer", fields=["id", "created_at", "birthdate", "orders_total_amount"])
    body = (b"ID,Created At,Birthdate,Orders Total Amount\n"
            b"cust_1,2024-01-02T10:00:00.000Z,1990-02-31 jane.doe@example.com,100\n"
            b"cust_2,2024-01-02T11:00:00.000Z,1990-02-01,lots\n")
    emu.inject({"route": "download_export", "body_base64": base64.b64encode(body).decode(), "count": 4})
    with pytest.raises(airflow_exception("AirflowFailException")) as failure:
        land(tmp_path, export_id, exported_object="customer").execute(context())
    message = str(failure.value)
    assert "row 1, column 'birthdate'" in message and "jane.doe" not in message and "personal data" in message
    logged = capfd.readouterr().out
    assert "reading the file again to find the row" in logged and "jane.doe" not in logged
    # A bad value in a column that is not personal is still quoted: it helps and harms no one.
    manifest = land(tmp_path, export_id, exported_object="customer", on_bad_value="reject").execute(context())
    rejected = (tmp_path / "customer" / PARTITION / f"rejected-{export_id}.csv").read_text()
    assert manifest["rows_rejected"] == 2 and "jane.doe" in rejected  # the raw row, as the lake holds raw data
    assert "cannot read 'lots'" in rejected and "cannot read <personal data" in rejected
    logged = capfd.readouterr().out
    assert "could not be typed" in logged and "jane.doe" not in logged


def test_rejected_rows_are_hashed_and_dropped_too(emu, hook, tmp_path, hash_key):
    export_id = done_export(emu, hook, "customer", fields=["id", "created_at", "email", "phone", "orders_total_amount"])
    body = (b"ID,Created At,Email,Phone,Orders Total Amount\n"
            b"cust_1,2024-01-02T10:00:00.000Z,jane@example.com,+48 123,lots\n")
    emu.inject({"route": "download_export", "body_base64": base64.b64encode(body).decode(), "count": 4})
    land(tmp_path, export_id, exported_object="customer", on_bad_value="reject", hash_key_conn_id=hash_key,
         column_policies={"email": "hash", "phone": "drop"}).execute(context())
    rejected = (tmp_path / "customer" / PARTITION / f"rejected-{export_id}.csv").read_text()
    assert rejected.splitlines()[0] == "id,created_at,email,orders_total_amount,_error"
    assert _hmac("jane@example.com") in rejected and "jane@" not in rejected and "+48" not in rejected


@pytest.mark.parametrize(("policies", "expected"), [
    ({"emial": "hash"}, "Unknown field 'emial' for exported object 'customer'. Did you mean 'email'?"),
    ({"email": "encrypt"}, "column_policies['email'] is 'encrypt'; allowed: 'drop'"),
    ({"id": "hash"}, "cannot hash customer.id"),
    ({"created_at": "drop"}, "cannot drop customer.created_at"),
    ("pii", "column_policies 'pii' is not a preset; use 'personal_data'"),
    (["email"], "column_policies must be a mapping"),
])
def test_bad_policies_fail_at_parse_time_naming_the_fix(policies, expected):
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    with pytest.raises(VoucherifyConfigError) as error:
        VoucherifyDownloadToWarehouseOperator(task_id="land", export_id="exp_1", destination="/tmp/lake",
                                              exported_object="customer", column_policies=policies)
    assert expected in str(error.value)


def test_hashing_needs_one_key_source_of_a_real_key(emu, hook, tmp_path, monkeypatch):
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    with pytest.raises(VoucherifyConfigError, match="needs a secret key: set hash_key_conn_id"):
        VoucherifyDownloadToWarehouseOperator(task_id="l", export_id="e", destination="/tmp/lake",
                                              exported_object="customer", column_policies={"email": "hash"})
    with pytest.raises(VoucherifyConfigError, match="not both"):
        VoucherifyDownloadToWarehouseOperator(task_id="l", export_id="e", destination="/tmp/lake",
                                              exported_object="customer", column_policies={"email": "hash"},
                                              hash_key_conn_id="a", hash_key_variable="b")
    monkeypatch.setenv("AIRFLOW_VAR_SHORT_KEY", "tiny-key")
    export_id = done_export(emu, hook, "customer", fields=CUSTOMER_FIELDS)
    with pytest.raises(airflow_exception("AirflowFailException"), match="too short: it needs at least 16 bytes"):
        land(tmp_path, export_id, exported_object="customer", column_policies={"email": "hash"},
             hash_key_variable="short_key").execute(context())
    assert not (tmp_path / "customer" / PARTITION / "_manifest.json").exists()
    assert emu.export_ledger()["remaining"] == 1  # a config mistake: the export stays for the fixed retry


def test_policies_on_every_object_are_valid():
    for obj in catalog.OBJECTS.values():
        policies = parse_policies(obj, "personal_data")
        assert dict(policies.columns) == obj.personal
        assert not set(policies.columns) & set(obj.placing_fields)
