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
    string is taken apart: it carries them all)."""
    settings: dict[str, Any] = {
        "account_name": getattr(fs, "account_name", None), "account_key": getattr(fs, "account_key", None),
        "sas_token": getattr(fs, "sas_token", None), "tenant_id": getattr(fs, "tenant_id", None),
        "client_id": getattr(fs, "client_id", None), "client_secret": getattr(fs, "client_secret", None),
        "endpoint": getattr(fs, "account_url", None)}
    if getattr(fs, "connection_string", None):
        parts = dict(p.split("=", 1) for p in str(fs.connection_string).split(";") if "=" in p)
        settings.update(account_name=parts.get("AccountName") or settings["account_name"],
                        account_key=parts.get("AccountKey") or settings["account_key"],
                        sas_token=parts.get("SharedAccessSignature") or settings["sas_token"],
                        endpoint=parts.get("BlobEndpoint") or settings["endpoint"])
    if not settings["endpoint"] and settings["account_name"]:
        host = getattr(fs, "account_host", None) or f"{settings['account_name']}.blob.core.windows.net"
        settings["endpoint"] = f"https://{host}"
    return settings


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
    conn_id = getattr(path, "conn_id", None)
    if conn_id:
        from airflow.sdk import BaseHook

        extras = BaseHook.get_connection(conn_id).extra_dejson

        def field(name: str) -> Any:
            return extras.get(name) or extras.get(f"extra__google_cloud_platform__{name}")

        anonymous = anonymous or bool(field("is_anonymous"))
        if field("keyfile_dict"):
            raw = field("keyfile_dict")
            key = dict(json.loads(raw) if isinstance(raw, str) else raw)
        elif field("key_path"):
            with open(str(field("key_path")), encoding="utf-8") as handle:
                key = dict(json.load(handle))
    return {"endpoint": endpoint, "anonymous": anonymous, "key": key}


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
    if endpoint:  # delta-rs (object_store) takes a custom endpoint only inside a service-account key
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
        raise VoucherifyConfigError("The destination's Azure connection names no storage account: set the "
                                    "connection's host or login (account name), or a connection string.")
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
