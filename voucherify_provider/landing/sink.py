"""Where a Parquet file's bytes go: a native pyarrow stream where the destination allows, hashed on the way.

ParquetWriter emits many small writes (page headers, pages, the footer). A native ``BufferedOutputStream``
gathers them, so Python runs once per ``FLUSH_BYTES`` (to hash, and to hand the buffer to the target), and
both of those release the GIL for the bulk of the work: ``hashlib`` on buffers over 2 KiB, and the
target's write when it is a native pyarrow stream. Targets, fastest first:

- a local path: pyarrow's native file (``pa.OSFile``);
- S3 without a custom signer or proxy: pyarrow's native ``S3FileSystem`` with the connection's
  credentials (its multipart upload runs on pyarrow's own threads);
- Azure with an account key: pyarrow's native ``AzureFileSystem``;
- anything else (gs://, Azure through a SAS token or an identity, S3 with a signer...): the fsspec file of
  the ObjectStoragePath. (pyarrow's GCS client takes only a static access token, which expires within the
  hour a long landing may need; gcsfs refreshes it.)
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from airflow.sdk import ObjectStoragePath

from voucherify_provider.errors import VoucherifyConfigError
from voucherify_provider.landing.credentials import azure_settings, s3_settings
from voucherify_provider.landing.paths import is_local
from voucherify_provider.landing.stores import AZURE, GCS, S3, store_for_protocol

log = logging.getLogger(__name__)
FLUSH_BYTES = 8 << 20


class _HashingSink(io.RawIOBase):
    """Counts and hashes what passes through to ``target``, so files are never read back to checksum."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += len(view)
        self._target.write(view)
        return len(view)

    def close(self) -> None:
        if not self.closed:
            self._target.close()
        super().close()


class HashedOutput:
    """An output stream for one file: ``stream`` takes the bytes; ``close()`` gives (size, sha256)."""

    def __init__(self, path: ObjectStoragePath) -> None:
        native = _native_output(path)
        self.native = native is not None
        self._sink = _HashingSink(native if native is not None else open_untracked(path, "wb"))
        self.stream = pa.BufferedOutputStream(pa.PythonFile(self._sink, mode="w"), buffer_size=FLUSH_BYTES)

    def close(self) -> tuple[int, str]:
        """Flush and close the file; its size and sha256."""
        if not self.stream.closed:
            self.stream.close()
        self._sink.close()
        return self._sink.size, self._sink.sha256.hexdigest()

    def discard(self) -> None:
        """Close without caring about the content (the file is being abandoned)."""
        try:
            self.close()
        except Exception:  # the file goes away anyway; its close error says nothing new
            log.debug("closing an abandoned file failed", exc_info=True)


def forget_listing(folder: ObjectStoragePath) -> None:
    """Drop fsspec's cached listing of ``folder``: files written by pyarrow's native S3 client never reach
    that cache, so a listing or an ``exists()`` served from it would miss them."""
    invalidate = getattr(folder.fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate(folder.path)


def remove_file(path: ObjectStoragePath) -> None:
    """Delete a file if it is there, whatever a cached listing says."""
    forget_listing(path.parent)
    path.unlink(missing_ok=True)


def open_untracked(path: ObjectStoragePath, mode: str) -> Any:
    """Open through the path's fsspec filesystem, without ObjectStoragePath's lineage wrapper.

    The wrapper reports every file written as a lineage output (staged names, locks and probes are not
    datasets: the operator reports the real output itself) and costs a Python call per write plus, on
    first use, loading the hook-lineage collector with every provider's asset factories (~0.17 s).
    """
    return path.fs.open(path.path, mode=mode)


def open_input(path: ObjectStoragePath) -> Any:
    """A file to read: pyarrow's native file where the destination allows (local, S3), else fsspec's."""
    native = native_location(path)
    return native[0].open_input_file(native[1]) if native is not None else open_untracked(path, "rb")


def arrow_filesystem(path: ObjectStoragePath) -> tuple[Any, str]:
    """A pyarrow filesystem for ``path``'s store and the path as that filesystem names it (native where
    the store allows, fsspec's otherwise)."""
    from pyarrow import fs as pafs

    return native_location(path) or (pafs.PyFileSystem(pafs.FSSpecHandler(path.fs)), str(path.path))


def native_location(path: ObjectStoragePath) -> tuple[Any, str] | None:
    """pyarrow's own filesystem for ``path``'s store and the path as it names it; None where only fsspec
    reaches (gs://, abfs://, S3 with a signer or a proxy)."""
    from pyarrow import fs as pafs

    if is_local(path):
        return pafs.LocalFileSystem(), "/" + str(path.path).lstrip("/")
    if path.protocol in S3.schemes and (filesystem := _cached_native(path.fs, _build_native_s3)) is not None:
        return filesystem, f"{path.bucket}/{path.key}"
    if path.protocol in AZURE.schemes and (filesystem := _cached_native(path.fs, _build_native_azure)) is not None:
        return filesystem, f"{path.bucket}/{path.key}"
    return None


def create_exclusively(path: ObjectStoragePath, data: bytes) -> None:
    """Write a small file only if none is there (the commit lock), atomically on every store: ``O_EXCL``
    locally, ``If-None-Match: *`` on S3 and Azure, ``ifGenerationMatch=0`` on GCS. Raises FileExistsError
    when the file exists."""
    store = store_for_protocol(path.protocol)
    if store is GCS:
        _refuse_zonal_bucket(path)
        path.fs.pipe_file(path.path, data, mode="create")
    elif store is AZURE:
        path.fs.pipe_file(path.path, data, overwrite=False)
    else:
        with open_untracked(path, "xb") as handle:
            handle.write(data)


def _native_output(path: ObjectStoragePath) -> Any | None:
    """A native pyarrow output stream for ``path``, or None where only fsspec can write there."""
    if is_local(path):
        return pa.OSFile(str(path.path), mode="wb")
    native = native_location(path)
    return native[0].open_output_stream(native[1]) if native is not None else None


def _refuse_zonal_bucket(path: ObjectStoragePath) -> None:
    """gcsfs writes to zonal (Rapid) buckets over gRPC, where its create mode overwrites: no exclusive
    create, so no safe commit."""
    lookup = getattr(path.fs, "_sync_lookup_bucket_type", None)
    if lookup is None:
        return
    bucket_type = lookup(path.bucket)
    if "ZONAL" in str(getattr(bucket_type, "value", bucket_type)).upper():
        raise VoucherifyConfigError(
            f"gs://{path.bucket} is a zonal bucket, where gcsfs cannot create a file exclusively (its uploads "
            "overwrite), so a commit could not be made safe. Land to a regional or multi-region bucket.")


def _cached_native(fs: Any, build: Callable[[Any], Any | None]) -> Any | None:
    """pyarrow's native filesystem for an fsspec one, built once per filesystem; None when the fsspec
    filesystem has settings pyarrow cannot carry (an S3 signer or proxy, Azure without an account key)."""
    cached = getattr(fs, "_voucherify_native", False)
    if cached is not False:
        return cached
    native = build(fs)
    try:
        fs._voucherify_native = native  # one per filesystem (fsspec caches filesystem instances)
    except AttributeError:
        pass
    return native


def _build_native_azure(fs: Any) -> Any | None:
    """pyarrow's Azure filesystem for an adlfs filesystem with an account key; None otherwise."""
    from urllib.parse import urlsplit

    from pyarrow import fs as pafs

    settings = azure_settings(fs)
    if not (settings["account_name"] and settings["account_key"] and settings["endpoint"]):
        return None
    endpoint = urlsplit(str(settings["endpoint"]))
    if endpoint.path.strip("/"):  # path-style (an emulator): pyarrow addresses the account by host only
        options = {"blob_storage_authority": endpoint.netloc, "dfs_storage_authority": endpoint.netloc}
    elif endpoint.netloc != f"{settings['account_name']}.blob.core.windows.net":  # sovereign cloud, private link
        options = {"blob_storage_authority": endpoint.netloc,
                   "dfs_storage_authority": endpoint.netloc.replace(".blob.", ".dfs.", 1)}
    else:
        options = {}
    return pafs.AzureFileSystem(account_name=str(settings["account_name"]), account_key=str(settings["account_key"]),
                                blob_storage_scheme=endpoint.scheme or "https",
                                dfs_storage_scheme=endpoint.scheme or "https", **options)


def _build_native_s3(fs: Any) -> Any | None:
    from pyarrow import fs as pafs

    settings = s3_settings(fs)
    if settings is None:
        return None
    options: dict[str, Any] = {"access_key": settings["key"], "secret_key": settings["secret"],
                               "session_token": settings["token"], "region": settings["region"]}
    if settings["endpoint"]:
        scheme, _, host = str(settings["endpoint"]).partition("://")
        options.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**options)
