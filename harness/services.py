"""The services a production-shaped Airflow runs beside: PostgreSQL (metadata database), Redis (Celery
broker) and an S3 endpoint (moto's server), each started on a free loopback port in a throwaway folder and
stopped with everything it started.

PostgreSQL and Redis come from the machine (Debian's ``postgresql`` and ``redis-server``; ``make`` installs
them where it can). When one is missing, :class:`MissingService` says which package provides it.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from harness.paths import VENV_BIN
from harness.stack import ManagedProcess, wait_until
from voucherify_provider.emulator.server import free_port

S3_KEY = S3_SECRET = "testing"  # moto accepts any credentials; these never leave the machine


class MissingService(RuntimeError):
    """A system program the stack needs is not installed (the message names the Debian package)."""


def postgres_bindir() -> Path:
    """Where ``initdb``/``pg_ctl`` live: on PATH, else Debian's versioned folder (newest first)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    raise MissingService("PostgreSQL's initdb was not found: apt-get install -y postgresql")


def libpq_dsn(database_url: str) -> str:
    """The libpq form (psycopg2.connect) of a SQLAlchemy ``postgresql+psycopg2://`` URL."""
    return database_url.replace("postgresql+psycopg2://", "postgresql://", 1)


class PostgresServer:
    """A throwaway PostgreSQL cluster with trust authentication and one database, on a free port."""

    def __init__(self, workdir: Path, database: str = "airflow", user: str = "airflow") -> None:
        self.workdir, self.database, self.user = workdir, database, user
        self.port = free_port()
        self.bindir = postgres_bindir()
        # PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's `postgres` user, in a
        # folder of its own (pytest's tmp folders are private to root).
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise MissingService("PostgreSQL cannot run as root and there is no 'postgres' user: "
                                     "apt-get install -y postgresql creates it") from None
        self.root = Path(tempfile.mkdtemp(prefix="vcf-postgres-"))
        self.data = self.root / "data"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database (psycopg2; Airflow derives the asyncpg one from it)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *cmd: str, as_owner: bool = True) -> None:
        done = subprocess.run([*(self.run_as if as_owner else []), *cmd], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({done.returncode}): {done.stderr.strip()[-800:]}")

    def __enter__(self) -> PostgresServer:
        if self.run_as:
            shutil.chown(self.root, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                  "-E", "UTF8", "--no-sync")
        # Airflow opens many connections (scheduler, api-server workers, triggerer, every task process).
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                   "-c fsync=off -c synchronous_commit=off")
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                      "-w", "-o", options, "start")
            self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                      self.database, as_owner=False)
        except BaseException:
            self.__exit__()
            raise
        return self

    def dump(self, path: Path) -> Path:
        """``pg_dump`` of the database into ``path`` (scanned for secrets like any other artefact)."""
        self._run(str(self.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                  "-f", str(path), self.database, as_owner=False)
        return path

    def __exit__(self, *exc: object) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        log = self.root / "server.log"
        if log.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, self.workdir / "postgres.log")
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """``redis-server`` on a free loopback port, nothing persisted."""

    def __init__(self, workdir: Path) -> None:
        program = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(program).exists():
            raise MissingService("redis-server was not found: apt-get install -y redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(workdir)]
        self.process = ManagedProcess(cmd, dict(os.environ), workdir / "redis.log")

    def __enter__(self) -> RedisServer:
        import redis

        self.process.start()
        wait_until(lambda: redis.Redis(port=self.port, socket_timeout=2).ping(), 30, "redis-server")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()


class S3Server:
    """moto's S3 server on a free loopback port, with one bucket."""

    def __init__(self, workdir: Path, bucket: str = "lake") -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.process = ManagedProcess([str(VENV_BIN / "moto_server"), "-p", str(self.port)], dict(os.environ),
                                      workdir / "moto.log")

    def __enter__(self) -> S3Server:
        import boto3

        self.process.start()
        wait_until(lambda: httpx.get(self.endpoint, timeout=2).status_code < 500, 60, "moto's S3 server", 0.1)
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                     region_name="us-east-1").create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop(grace=10)

    def connection(self) -> str:
        """``AIRFLOW_CONN_...`` JSON of an ``aws`` connection to this endpoint."""
        return json.dumps({"conn_type": "aws", "login": S3_KEY, "password": S3_SECRET,
                           "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}})

    def filesystem(self) -> Any:
        """An s3fs filesystem on this endpoint (no listing cache: tests read what was just written)."""
        import s3fs

        return s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, endpoint_url=self.endpoint,
                                 use_listings_cache=False)

    def mirror(self, prefix: str, local: Path) -> Path:
        """Copy every object under ``s3://<bucket>/<prefix>`` into ``local`` (hidden names included), so the
        local checks and leak scans read exactly what the bucket holds."""
        fs = self.filesystem()
        root = "/".join(p for p in (self.bucket, prefix.strip("/")) if p)
        for key in fs.find(root):
            target = local / key[len(root) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fs.cat_file(key))
        return local
