"""What native clients (pyarrow's filesystems, delta-rs) need to reach a destination's store: the
credentials and endpoint of the fsspec filesystem Airflow built from the user's connection.

Nothing here is logged or returned to XCom: the values go straight into the native clients.
Import-light (no pyarrow).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk.log import mask_secret

from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.paths import is_local, path_url
from voucherify_provider.landing.stores import AZURE, GCS, S3, store_for_protocol

log = logging.getLogger(__name__)


def s3_settings(fs: Any) -> dict[str, Any] | None:
    """Credentials (frozen), region and endpoint of an s3fs filesystem, for native clients (pyarrow,
    delta-rs); None when it has settings they cannot carry (a custom signer, a proxy, anonymous access)."""
    config = dict(getattr(fs, "config_kwargs", None) or {})
    if getattr(fs, "anon", False) or "signature_version" in config or "proxies" in config:
        return None
    session = getattr(fs, "session", None)
    try:
        if session is not None and hasattr(session, "get_credentials"):
            credentials = session.get_credentials()
            if asyncio.iscoroutine(credentials):
                credentials = asyncio.run(credentials)
            if credentials is None:
                return None
            frozen = credentials.get_frozen_credentials()
            if asyncio.iscoroutine(frozen):
                frozen = asyncio.run(frozen)
            key, secret, token = frozen.access_key, frozen.secret_key, frozen.token
            region = session.get_config_variable("region")
        else:
            key, secret, token, region = fs.key, fs.secret, fs.token, None
    except Exception:  # any doubt about the credentials: let fsspec (which resolved them) do the work
        log.debug("native S3 settings unavailable", exc_info=True)
        return None
    if not key or not secret:
        return None
    client_kwargs = getattr(fs, "client_kwargs", None) or {}
    return {"key": key, "secret": secret, "token": token,
            "region": client_kwargs.get("region_name") or region or "us-east-1",
            "endpoint": getattr(fs, "endpoint_url", None) or client_kwargs.get("endpoint_url")}



def azure_settings(fs: Any) -> dict[str, Any]:
    """Account, key or SAS token, service principal and blob endpoint of an adlfs filesystem (a connection
    string is taken apart as the Azure SDK does: keys case-insensitive, the endpoint from ``BlobEndpoint``
    or from protocol, account and ``EndpointSuffix``). Secret values are registered with the masker."""
    settings: dict[str, Any] = {
        "account_name": getattr(fs, "account_name", None), "account_key": getattr(fs, "account_key", None),
        "sas_token": getattr(fs, "sas_token", None), "tenant_id": getattr(fs, "tenant_id", None),
        "client_id": getattr(fs, "client_id", None), "client_secret": getattr(fs, "client_secret", None),
        "endpoint": getattr(fs, "account_url", None)}
    suffix, protocol = "core.windows.net", "https"
    if getattr(fs, "connection_string", None):
        parts = {k.strip().upper(): v.strip() for k, _, v in
                 (p.partition("=") for p in str(fs.connection_string).split(";")) if v}
        blob_endpoint = parts.get("BLOBENDPOINT")
        host_account = urlsplit(blob_endpoint).netloc.split(".", 1)[0] if blob_endpoint else None
        settings.update(account_name=parts.get("ACCOUNTNAME") or settings["account_name"] or host_account,
                        account_key=parts.get("ACCOUNTKEY") or settings["account_key"],
                        sas_token=parts.get("SHAREDACCESSSIGNATURE") or settings["sas_token"],
                        endpoint=blob_endpoint or settings["endpoint"])
        suffix = parts.get("ENDPOINTSUFFIX", suffix)
        protocol = parts.get("DEFAULTENDPOINTSPROTOCOL", protocol)
    if not settings["endpoint"] and settings["account_name"]:
        host = getattr(fs, "account_host", None) or f"{settings['account_name']}.blob.{suffix}"
        settings["endpoint"] = f"{protocol}://{host}"
    for secret in ("account_key", "sas_token", "client_secret"):
        if settings[secret]:
            mask_secret(str(settings[secret]))
    return settings


# Connection fields that give gcsfs an identity delta-rs cannot be handed: it would run as another one.
GCS_IDENTITY_FIELDS = ("impersonation_chain", "key_secret_name", "credential_config_file")


def gcs_settings(path: Any) -> dict[str, Any]:
    """Endpoint, anonymity and service-account key of a gs:// path's gcsfs filesystem and connection.

    The key comes from the ``google_cloud_platform`` connection (``keyfile_dict`` or ``key_path``): gcsfs
    holds only refreshed tokens. No key and no endpoint: the worker's own identity (Application Default
    Credentials, the metadata server on Composer / GKE).
    """
    fs = path.fs
    endpoint = getattr(fs, "_endpoint", None)
    token = getattr(getattr(fs, "credentials", None), "token", None)
    anonymous = token == "anon" or type(getattr(fs.credentials, "credentials", None)).__name__ == "AnonymousCredentials"
    key: dict[str, Any] | None = None
    identity: list[str] = []
    conn_id = getattr(path, "conn_id", None)
    if conn_id:
        from airflow.sdk import BaseHook

        extras = BaseHook.get_connection(conn_id).extra_dejson

        def field(name: str) -> Any:
            return extras.get(name) or extras.get(f"extra__google_cloud_platform__{name}")

        anonymous = anonymous or bool(field("is_anonymous"))
        identity = [name for name in GCS_IDENTITY_FIELDS if field(name)]
        if field("keyfile_dict"):
            raw = field("keyfile_dict")
            key = dict(json.loads(raw) if isinstance(raw, str) else raw)
        elif field("key_path"):
            with open(str(field("key_path")), encoding="utf-8") as handle:
                key = dict(json.load(handle))
    if key and isinstance(key.get("private_key"), str):
        key["private_key"] = key["private_key"].replace("\\n", "\n")  # as Airflow's credentials provider does
        mask_secret(key["private_key"])
    return {"endpoint": endpoint, "anonymous": anonymous, "key": key, "identity_fields": identity}


def delta_location(table: Any) -> tuple[str, dict[str, str]]:
    """The Delta table's URI and delta-rs storage options (the destination connection's credentials and
    endpoint). Merges are serialised by the table's commit lock, and delta-rs's own commits are conditional
    puts on GCS and Azure."""
    if is_local(table):
        return path_url(table), {}
    store = store_for_protocol(table.protocol)
    if store is S3:
        return path_url(table), _s3_delta_options(table.fs)
    if store is GCS:
        return f"gs://{table.bucket}/{table.key}", _gcs_delta_options(table)
    if store is AZURE:
        return f"az://{table.bucket}/{table.key}", _azure_delta_options(table.fs)
    raise VoucherifyConfigError(f"The current-state table cannot be kept on {store.name}.")  # pragma: no cover


def _s3_delta_options(fs: Any) -> dict[str, str]:
    settings = s3_settings(fs)
    if settings is None:
        raise VoucherifyConfigError("The destination's S3 connection uses settings delta-rs cannot carry "
                                    "(anonymous access, a custom signer or a proxy); give it key/secret credentials.")
    options = {"AWS_ACCESS_KEY_ID": settings["key"], "AWS_SECRET_ACCESS_KEY": settings["secret"],
               "AWS_REGION": settings["region"],
               # Merges are serialised by the commit lock (a conditional put), so delta-rs need not bring its
               # own locking service.
               "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    if settings["token"]:
        options["AWS_SESSION_TOKEN"] = settings["token"]
    if settings["endpoint"]:
        options["AWS_ENDPOINT_URL"] = str(settings["endpoint"])
        options["AWS_ALLOW_HTTP"] = "true" if str(settings["endpoint"]).startswith("http://") else "false"
    return options


def _gcs_delta_options(table: Any) -> dict[str, str]:
    settings = gcs_settings(table)
    key, endpoint = settings["key"], settings["endpoint"]
    if settings["identity_fields"]:
        raise VoucherifyConfigError(
            f"The destination's google_cloud_platform connection sets {', '.join(settings['identity_fields'])}, "
            "which the current-state table's Delta client (delta-rs) cannot use: it would act as another identity. "
            "Give the connection keyfile_dict or key_path, or none to use the worker's own service account.")
    if endpoint:  # delta-rs (object_store) takes a custom endpoint only inside a service-account key
        if not key and not settings["anonymous"]:
            raise VoucherifyConfigError(
                f"The destination's GCS endpoint {endpoint} reaches delta-rs only inside a service-account key: "
                "give the connection keyfile_dict or key_path (or is_anonymous for an emulator).")
        key = {"client_email": "", "private_key": "", "private_key_id": "", **(key or {}), "gcs_base_url": endpoint}
        if settings["anonymous"]:
            key["disable_oauth"] = True
    options: dict[str, str] = {}
    if key:
        options["google_service_account_key"] = json.dumps(key)
    elif settings["anonymous"]:
        options["google_skip_signature"] = "true"
    if endpoint and str(endpoint).startswith("http://"):
        options["allow_http"] = "true"
    return options


def _azure_delta_options(fs: Any) -> dict[str, str]:
    settings = azure_settings(fs)
    if not settings["account_name"]:
        raise VoucherifyConfigError("The destination's Azure connection names no storage account: set its "
                                    "account_name extra, or a connection_string extra.")
    options = {"azure_storage_account_name": str(settings["account_name"])}
    if settings["account_key"]:
        options["azure_storage_account_key"] = str(settings["account_key"])
    elif settings["sas_token"]:
        options["azure_storage_sas_key"] = str(settings["sas_token"]).lstrip("?")
    elif settings["client_id"] and settings["client_secret"] and settings["tenant_id"]:
        options.update(azure_client_id=str(settings["client_id"]), azure_client_secret=str(settings["client_secret"]),
                       azure_tenant_id=str(settings["tenant_id"]))
    endpoint = str(settings["endpoint"] or "")
    if endpoint and not endpoint.rstrip("/").endswith(".blob.core.windows.net"):
        options["azure_storage_endpoint"] = endpoint.rstrip("/")  # an emulator, a private endpoint
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    return options
