"""Processes the demos, the end-to-end tests and the benchmarks start: the emulator and a whole Airflow
(standalone).

Every process runs in its own session and is stopped with its whole process group, on success, failure
or Ctrl-C, so nothing outlives the demo or a test.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from harness.paths import REPO_ROOT, VENV_BIN
from voucherify_provider.emulator.server import free_port

# SQLite is shared by the scheduler, the dag-processor, the triggerer and our CLI calls: wait for a lock
# (up to a minute) instead of failing after pysqlite's default five seconds.
SQLITE_CONNECT_ARGS = {"timeout": 60}


class ManagedProcess:
    """A child process in its own process group, logged to a file, stopped with all its children."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> None:
        self.cmd, self.env, self.log_path, self.cwd = cmd, env, log_path, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.cwd)
        log.close()

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            break
        # the leader is gone; make sure no child of the group lingers either
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.2)


class ProcessExited(RuntimeError):
    """A process the caller waits on has exited: waiting longer cannot help."""


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy; raise naming ``what`` on timeout. Errors of
    ``check`` count as not yet, except :class:`ProcessExited`, which ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except ProcessExited:
            raise
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class EmulatorProcess:
    """``python -m voucherify_provider.emulator`` on a free loopback port."""

    def __init__(self, workdir: Path, *, app_id: str = "demo-app", app_token: str = "demo-secret-key-0001",
                 seed: int = 42, scale: int = 2000, extra_args: Iterable[str] = ()) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.app_id, self.app_token = app_id, app_token
        cmd = [str(VENV_BIN / "python"), "-m", "voucherify_provider.emulator", "--port", str(self.port),
               "--app-id", app_id, "--app-token", app_token, "--seed", str(seed), "--scale", str(scale),
               *extra_args]
        self.process = ManagedProcess(cmd, dict(os.environ), workdir / "emulator.log")

    def __enter__(self) -> EmulatorProcess:
        self.process.start()
        wait_until(lambda: httpx.get(f"{self.base_url}/_emulator/health").status_code == 200, 60, "the emulator")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stop()

    def connection(self) -> str:
        """``AIRFLOW_CONN_...`` JSON for this emulator."""
        return json.dumps({"conn_type": "voucherify", "login": self.app_id, "password": self.app_token,
                           "host": self.base_url})

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call an admin route and return its JSON."""
        response = httpx.request(method, f"{self.base_url}/_emulator/{path}", timeout=60, **kwargs)
        response.raise_for_status()
        return response.json()

    def exports(self) -> list[dict[str, Any]]:
        """Every export made since the emulator started, deleted ones included (``deleted`` says which)."""
        return list(self.admin("GET", "exports")["exports"])

    def remaining_exports(self) -> list[dict[str, Any]]:
        """The exports still in the project: what a user's dashboard lists, with their data downloadable."""
        return [e for e in self.exports() if not e["deleted"]]


class AirflowStack:
    """``airflow standalone`` (scheduler, dag-processor, triggerer, api-server; LocalExecutor), on SQLite
    or, given ``database_url``, on PostgreSQL."""

    def __init__(self, home: Path, dags_folder: Path, env: dict[str, str] | None = None, *,
                 database_url: str | None = None) -> None:
        self.home = home
        self.database_url = database_url
        self.port = free_port()
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone spawns `airflow`
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "harness.stack.SQLITE_CONNECT_ARGS",
            # Two cores and one SQLite file: a few task processes at a time, not LocalExecutor's 32.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            # DAGs start unpaused here, and a history DAG catches up on all of its span once unpaused: the
            # stacks that run history loads ask for them.
            "VOUCHERIFY_HISTORY": "false",
            **(env or {}),
        }
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        if database_url:
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url
            self.env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", None)  # SQLite's, not psycopg2's
        self.process = ManagedProcess([], self.env, home / "standalone.log")

    def prepare(self, pools: dict[str, int] | None = None) -> None:
        """Migrate the database, serialize the DAGs and create pools, with nothing else running.

        Writing to SQLite while the scheduler runs fails now and then with "database is locked" (a
        lock upgrade is refused at once, whatever the busy timeout), so set-up and backfill creation
        happen while the stack is stopped.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        self.cli("dags", "reserialize")
        for name, slots in (pools or {}).items():
            self.cli("pools", "set", name, str(slots), "Voucherify API calls (plan rate limit)")

    def start(self) -> None:
        """Start ``airflow standalone`` and wait until every component reports healthy."""
        self.process = ManagedProcess([str(VENV_BIN / "airflow"), "standalone"], self.env,
                                      self.home / "standalone.log")
        self.process.start()
        try:
            wait_until(self._healthy, 180, "Airflow standalone to become healthy", interval=1)
        except BaseException:
            self.process.stop()
            raise

    def stop(self) -> None:
        """Stop every process of the stack."""
        self.process.stop()

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raise if a process of the stack has exited (so waits fail fast instead of timing out)."""
        if not self.process.alive():
            raise ProcessExited(f"airflow standalone exited; see {self.process.log_path}")

    def _healthy(self) -> bool:
        self.check_alive()
        health = httpx.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=5).json()
        return all(health.get(part, {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` command against this stack; a failure carries the command's last output."""
        done = subprocess.run([str(VENV_BIN / "airflow"), *args], env=self.env, capture_output=True, text=True,
                              timeout=300)
        if check and done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
            raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n" + "\n".join(tail))
        return done

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API (``/api/v2/...``) with a token, as the UI does; return the JSON body, raising
        with the response's text on errors."""
        base = f"http://127.0.0.1:{self.port}"
        token = httpx.get(f"{base}/auth/token", timeout=30).json()["access_token"]
        response = httpx.request(method, f"{base}/api/v2/{path}", timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:1000]}")
        return response.json() if response.content else None

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the metadata database directly; ``?`` placeholders on SQLite and PostgreSQL alike."""
        if not self.database_url:
            with sqlite3.connect(self.home / "airflow.db", timeout=30) as con:
                return list(con.execute(sql, tuple(params)))
        import psycopg2

        from harness.services import libpq_dsn  # services builds on this module

        with psycopg2.connect(libpq_dsn(self.database_url)) as con, con.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), tuple(params))
            rows = cur.fetchall() if cur.description else []
        con.close()
        return [tuple(r) for r in rows]

    def backfill(self, dag_id: str, from_date: str, to_date: str, *extra: str) -> int:
        """``airflow backfill create`` for a DAG (call it while the stack is stopped); return its id."""
        self.cli("backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date, *extra)
        return int(self.query("SELECT max(id) FROM backfill WHERE dag_id = ?", [dag_id])[0][0])

    def wait_for_backfills(self, backfill_ids: Iterable[int], timeout: float = 900) -> list[tuple[str, str, str]]:
        """Wait until the scheduler completes the backfills; return (dag_id, run_id, state) of their runs."""
        ids = list(backfill_ids)
        marks = ",".join("?" * len(ids))

        def completed() -> bool:
            self.check_alive()
            return not self.query(f"SELECT id FROM backfill WHERE completed_at IS NULL AND id IN ({marks})", ids)

        wait_until(completed, timeout, f"backfills {ids} to complete", interval=2)
        return [(r[0], r[1], r[2]) for r in self.query(
            "SELECT r.dag_id, r.run_id, r.state FROM backfill_dag_run b JOIN dag_run r ON r.id = b.dag_run_id "
            f"WHERE b.backfill_id IN ({marks})", ids)]
