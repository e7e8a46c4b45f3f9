"""The services of the production-shaped stack (tests/test_cluster.py, make demo-cluster) start, serve
and leave nothing behind: a quick check that runs in every local ``make test``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from harness.services import MissingService, PostgresServer, RedisServer, S3Server, libpq_dsn

T = TypeVar("T")


def installed(service: Callable[[Path], T], workdir: Path) -> T:
    """The service, or a skip naming the Debian package when the machine lacks it."""
    try:
        return service(workdir)
    except MissingService as err:
        pytest.skip(str(err))


def test_postgres_serves_a_database_dumps_it_and_cleans_up(tmp_path):
    import psycopg2

    server = installed(PostgresServer, tmp_path)
    with server:
        dsn = libpq_dsn(server.url)
        with psycopg2.connect(dsn) as con, con.cursor() as cur:
            cur.execute("CREATE TABLE probe (marker text); INSERT INTO probe VALUES ('written-by-the-test')")
        con.close()
        dump = server.dump(tmp_path / "dump.sql").read_text()
    assert "CREATE TABLE public.probe" in dump and "written-by-the-test" in dump
    assert not server.root.exists()  # the cluster's folder is gone with the server
    assert (tmp_path / "postgres.log").exists()  # its log is kept beside the caller's other logs
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(dsn, connect_timeout=3)


def test_redis_answers_and_stops(tmp_path):
    import redis

    server = installed(RedisServer, tmp_path)
    with server:
        client = redis.Redis(port=server.port, socket_timeout=2)
        client.set("k", "v")
        assert client.get("k") == b"v"
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=server.port, socket_timeout=2).ping()


def test_s3_mirror_copies_every_object_with_its_key(tmp_path):
    with S3Server(tmp_path) as s3:
        fs = s3.filesystem()
        fs.pipe({f"{s3.bucket}/a/.hidden": b"1", f"{s3.bucket}/a/b/c.txt": b"22", f"{s3.bucket}/top": b"333"})
        whole = s3.mirror("", tmp_path / "all")
        part = s3.mirror("a", tmp_path / "part")
    assert sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file()) == \
        ["a/.hidden", "a/b/c.txt", "top"]
    assert (part / "b" / "c.txt").read_bytes() == b"22" and (part / ".hidden").read_bytes() == b"1"
