"""Where a landing goes: the destination as an ObjectStoragePath, its Asset and lineage names, and who owns
the files a task stages there.

Import-light (no pyarrow): operators resolve their Asset outlets at DAG-parse time.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from airflow.sdk import Asset, ObjectStoragePath

from voucherify_provider.errors import VoucherifyConfigError, explain_missing_connection
from voucherify_provider.landing.paths import is_local, is_local_url, path_url
from voucherify_provider.landing.stores import (
    AZURE,
    Store,
    canonical_url,
    shown_url,
    store_for_protocol,
    store_of,
    supported_schemes,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


def check_destination(destination: str) -> Store:
    """The destination's store; fails (at parse time where called there) for an empty destination or a
    store the landing cannot commit on safely."""
    if not str(destination).strip():
        raise VoucherifyConfigError(f"destination is empty; give {supported_schemes()}.")
    return store_of(destination)


def destination_path(destination: str | ObjectStoragePath, conn_id: str | None) -> ObjectStoragePath:
    """The destination base as an ObjectStoragePath on a supported store (see ``stores.py``).

    A destination connection that does not exist is an error here: the filesystem would otherwise fall
    back silently to whatever default credentials the worker has.
    """
    if isinstance(destination, ObjectStoragePath):
        store_for_protocol(destination.protocol, shown=str(destination))
        return destination
    store = check_destination(destination)
    destination = canonical_url(destination)
    if store is AZURE:
        # The Azure SDK logs every request and its headers at INFO: thousands of lines per landing.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    if conn_id:
        from airflow.sdk import BaseHook

        with explain_missing_connection(
                f"destination_conn_id {conn_id!r} is not defined. Create it (Admin > Connections, or "
                f"AIRFLOW_CONN_{conn_id.upper()}), or leave destination_conn_id unset to use the worker's "
                "default credentials."):
            BaseHook.get_connection(conn_id)
    if not conn_id and is_local_url(str(destination)):
        _attach_local_filesystem()
    try:
        path = ObjectStoragePath(str(destination), conn_id=conn_id)
        path.fs  # noqa: B018 - builds the filesystem: a connection it cannot use fails here, named
        return path
    except ValueError as err:
        raise VoucherifyConfigError(
            f"destination {shown_url(str(destination))!r}: {err}. {store.name} needs {store.install} on the worker, "
            "and a connection it can use (docs: Landing on S3, GCS and Azure).") from None


def _attach_local_filesystem() -> None:
    """Give local paths their filesystem directly: resolving it through Airflow's registry first imports
    every provider's filesystem module (boto3 and more: ~0.15-0.3 s of each landing task)."""
    try:
        from airflow.sdk.io.store import attach
    except ImportError:  # pragma: no cover - older task SDKs resolve it the slow way
        return
    from fsspec.implementations.local import LocalFileSystem

    attach("file", fs=LocalFileSystem())


def asset_for(destination: str, exported_object: str) -> Asset:
    """The Asset a landing task emits: the object's folder under the destination."""
    base = canonical_url(str(destination)).rstrip("/")
    if "://" not in base:
        base = f"file://{base if base.startswith('/') else '/' + base}"
    return Asset(uri=f"{base}/{exported_object}")


def lineage_dataset_name(path: ObjectStoragePath) -> tuple[str, str]:
    """OpenLineage (namespace, name) of a path, by the OpenLineage naming spec: ``file`` + absolute path
    locally, ``s3://bucket`` / ``gs://bucket`` + key, and for Azure
    ``abfss://container@account.dfs.core.windows.net`` + path."""
    if is_local(path):
        return "file", path_url(path)
    store = store_for_protocol(path.protocol)
    if store is AZURE:
        from voucherify_provider.landing.credentials import azure_settings

        account = azure_settings(path.fs)["account_name"]
        if account:
            return f"abfss://{path.bucket}@{account}.dfs.core.windows.net", str(path.key)
    return f"{store.schemes[0]}://{path.bucket}", str(path.key)  # gcs:// → gs://, s3a:// → s3://


def staging_owner(context: Context) -> str | None:
    """Same for every try of one task instance (so a retry finds a killed try's staged files), different
    for any other run; None outside a task run."""
    ti = context.get("ti")
    if ti is None:
        return None
    identity = f"{ti.dag_id}\x00{ti.run_id}\x00{ti.task_id}\x00{getattr(ti, 'map_index', -1)}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]
