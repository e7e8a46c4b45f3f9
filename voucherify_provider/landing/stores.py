"""The stores a landing can commit on, and the URL forms each accepts.

The landing's guarantees rest on two things every store here has: an exclusive create (the commit lock:
``O_EXCL`` locally, ``If-None-Match: *`` on S3 and Azure, ``ifGenerationMatch=0`` on GCS) and a
filesystem that reaches it with the user's Airflow connection. A scheme without both (``http://``,
``ftp://``, ``memory://``...) is refused before any data moves.

Import-light (no pyarrow): operators check destinations at DAG-parse time.
"""

from __future__ import annotations

from dataclasses import dataclass

from voucherify_provider.errors import VoucherifyConfigError


@dataclass(frozen=True)
class Store:
    """One kind of store: its URL schemes, and what a worker installs to reach it."""

    name: str
    schemes: tuple[str, ...]
    install: str


LOCAL = Store("local disk", ("", "file", "local"), "nothing")
S3 = Store("Amazon S3", ("s3", "s3a"), "apache-airflow-providers-amazon[s3fs] (an `aws` connection)")
GCS = Store("Google Cloud Storage", ("gs", "gcs"),
            "apache-airflow-providers-google (a `google_cloud_platform` connection)")
AZURE = Store("Azure Blob Storage / ADLS Gen2", ("abfs", "abfss", "az"),
              "apache-airflow-providers-microsoft-azure (an `adls` or `wasb` connection)")
STORES = (LOCAL, S3, GCS, AZURE)
# Airflow registers Azure's filesystem (with the connection) for abfs/abfss only; adlfs reads az:// the same.
SCHEME_ALIASES = {"az": "abfs"}


def supported_schemes() -> str:
    """The accepted URL forms, for error messages."""
    return ("a local path or file://, s3://bucket/prefix, gs://bucket/prefix, "
            "abfs://container/prefix (also abfss://, az://)")


def store_of(destination: str) -> Store:
    """The store a destination (a local path or a URL) names; a scheme the landing cannot commit on safely
    is a :class:`VoucherifyConfigError` naming the ones it can."""
    text = str(destination)
    return store_for_protocol(text.split("://", 1)[0] if "://" in text else "", shown=shown_url(text))


def shown_url(url: str) -> str:
    """A URL fit for an error message: without a query string or user part (a pasted SAS URL carries its
    signature there)."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return str(url)
    rest = rest.split("?", 1)[0]
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"


def store_for_protocol(protocol: str, shown: str | None = None) -> Store:
    """The store of an ObjectStoragePath's ``protocol`` (``""`` and ``file`` are the local disk)."""
    scheme = protocol.lower()
    for store in STORES:
        if scheme in store.schemes:
            return store
    raise VoucherifyConfigError(
        f"destination {shown or protocol + '://'!r}: the {scheme}:// scheme cannot be landed on safely (the "
        f"commit needs an exclusive create that store does not offer here). Use {supported_schemes()}.")


def canonical_url(destination: str) -> str:
    """The URL as Airflow's filesystem registry knows it, after checking the scheme is supported:
    ``az://c/p`` → ``abfs://c/p`` (the same adlfs store), and Spark's and OpenLineage's
    ``abfss://c@account.dfs.core.windows.net/p`` → ``abfss://c/p`` (Airflow would read ``c`` as a
    connection id; the account comes from the connection)."""
    store = store_of(destination)
    scheme, sep, rest = str(destination).partition("://")
    if not sep:
        return str(destination)
    scheme = SCHEME_ALIASES.get(scheme.lower(), scheme.lower())
    if store is AZURE:
        host, slash, path = rest.partition("/")
        container, at, account_host = host.partition("@")
        if at and account_host.lower().endswith((".dfs.core.windows.net", ".blob.core.windows.net")):
            rest = f"{container}{slash}{path}"
    return f"{scheme}://{rest}"
