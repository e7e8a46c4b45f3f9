"""The rules each destination store follows, without a server: accepted URL forms, credentials handed to
native clients, the lock's refusals. The same stores against their emulators: tests/test_cloud_stores.py."""

from __future__ import annotations

import json
from enum import Enum
from types import SimpleNamespace
from typing import Any

import pytest

from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.credentials import azure_settings, delta_location
from voucherify_provider.landing.stores import AZURE, GCS, LOCAL, S3, canonical_url, shown_url, store_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("url", "store", "canonical"), [
    ("relative/lake", LOCAL, "relative/lake"),
    ("/srv/lake", LOCAL, "/srv/lake"),
    ("FILE:///srv/lake", LOCAL, "file:///srv/lake"),
    ("s3a://bucket/wh", S3, "s3a://bucket/wh"),
    ("GS://bucket/wh", GCS, "gs://bucket/wh"),
    ("az://container/wh", AZURE, "abfs://container/wh"),
    ("abfss://container@acct.dfs.core.windows.net/wh", AZURE, "abfss://container/wh"),
    ("abfs://container@acct.blob.core.windows.net/wh", AZURE, "abfs://container/wh"),
])
def test_accepted_destinations_and_their_canonical_form(url, store, canonical):
    assert store_of(url) is store
    assert canonical_url(url) == canonical


@pytest.mark.parametrize("url", ["http://files.example.com/lake", "wasbs://c@a.blob.core.windows.net/x",
                                 "memory://lake", "hdfs://nn/lake", "sftp://host/lake"])
def test_stores_without_an_exclusive_create_are_refused_naming_the_accepted_forms(url):
    with pytest.raises(VoucherifyConfigError, match=r"cannot be landed on safely.*s3://.*gs://.*abfs://"):
        store_of(url)


def test_a_refused_url_is_shown_without_its_signature_or_user():
    secret_url = "https://user:pw@acct.blob.core.windows.net/c/lake?sv=2024&sig=SECRETSIG"
    with pytest.raises(VoucherifyConfigError) as refused:
        store_of(secret_url)
    assert "SECRETSIG" not in str(refused.value) and "pw" not in str(refused.value)
    assert shown_url(secret_url) == "https://acct.blob.core.windows.net/c/lake"


def adlfs_like(**attributes: Any) -> Any:
    defaults = dict.fromkeys(("account_name", "account_key", "sas_token", "tenant_id", "client_id",
                              "client_secret", "account_url", "connection_string"))
    return SimpleNamespace(**{**defaults, **attributes})


def test_azure_connection_strings_are_read_as_the_sdk_reads_them():
    sovereign = adlfs_like(connection_string="defaultendpointsprotocol=https;accountname=acct;"
                                             "accountkey=abc/def==;EndpointSuffix=core.chinacloudapi.cn")
    settings = azure_settings(sovereign)
    assert (settings["account_name"], settings["account_key"]) == ("acct", "abc/def==")
    assert settings["endpoint"] == "https://acct.blob.core.chinacloudapi.cn"
    sas_only = adlfs_like(connection_string="BlobEndpoint=https://acct2.blob.core.windows.net/;"
                                            "SharedAccessSignature=sv=2024-01-01&sig=a%3D%3D")
    settings = azure_settings(sas_only)
    assert (settings["account_name"], settings["sas_token"]) == ("acct2", "sv=2024-01-01&sig=a%3D%3D")


def gcs_path(monkeypatch: Any, extra: dict[str, Any], endpoint: str | None = None) -> Any:
    monkeypatch.setenv("AIRFLOW_CONN_GCS_RULES", json.dumps({"conn_type": "google_cloud_platform", "extra": extra}))
    fs = SimpleNamespace(_endpoint=endpoint, credentials=SimpleNamespace(token=None, credentials=object()))
    return SimpleNamespace(protocol="gs", bucket="lake", key="current/order", conn_id="gcs_rules", fs=fs)


def test_gcs_keys_reach_delta_rs_with_their_newlines_and_other_identities_are_refused(monkeypatch):
    key = {"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
           "private_key": "-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\\n"}
    uri, options = delta_location(gcs_path(monkeypatch, {"keyfile_dict": json.dumps(key)}))
    assert uri == "gs://lake/current/order"
    assert json.loads(options["google_service_account_key"])["private_key"].count("\n") == 3
    with pytest.raises(VoucherifyConfigError, match=r"impersonation_chain.*cannot use"):
        delta_location(gcs_path(monkeypatch, {"impersonation_chain": "sa@other.iam.gserviceaccount.com"}))
    with pytest.raises(VoucherifyConfigError, match="only inside a service-account key"):
        delta_location(gcs_path(monkeypatch, {"project": "p"}, endpoint="https://private.example.com"))
    _, emulator = delta_location(gcs_path(monkeypatch, {"is_anonymous": True}, endpoint="http://127.0.0.1:1"))
    assert json.loads(emulator["google_service_account_key"])["disable_oauth"] is True
    assert emulator["allow_http"] == "true"


def test_the_lock_refuses_zonal_gcs_buckets_where_gcsfs_overwrites():
    from voucherify_provider.landing.sink import create_exclusively

    class BucketType(Enum):
        ZONAL_HIERARCHICAL = "ZONAL_HIERARCHICAL"

    written: list[bytes] = []
    fs = SimpleNamespace(_sync_lookup_bucket_type=lambda bucket: BucketType.ZONAL_HIERARCHICAL,
                         pipe_file=lambda *args, **kwargs: written.append(args[1]))
    path = SimpleNamespace(protocol="gs", bucket="rapid", path="rapid/p/_commit.lock", fs=fs)
    with pytest.raises(VoucherifyConfigError, match="zonal bucket"):
        create_exclusively(path, b"lock")  # type: ignore[arg-type]
    assert written == []


def test_a_lock_vanishing_while_read_is_no_holder_but_other_errors_surface(monkeypatch, tmp_path):
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing import writer

    lock = writer.CommitLock(ObjectStoragePath(f"file://{tmp_path}"), "me", timeout=1)

    class ResourceNotFoundError(Exception):  # Azure's name for a blob deleted under the reader
        pass

    def vanished(path: Any, mode: str) -> Any:
        raise ResourceNotFoundError("The specified blob does not exist.")

    monkeypatch.setattr(writer, "open_untracked", vanished)
    assert lock._holder() is None

    def refused(path: Any, mode: str) -> Any:
        raise RuntimeError("403 AuthorizationFailure")

    monkeypatch.setattr(writer, "open_untracked", refused)
    with pytest.raises(RuntimeError, match="AuthorizationFailure"):
        lock._holder()


def test_lineage_namespaces_use_each_stores_canonical_scheme():
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider.landing.destination import lineage_dataset_name

    assert lineage_dataset_name(ObjectStoragePath("gcs://lake/wh/redemption")) == ("gs://lake", "wh/redemption")
