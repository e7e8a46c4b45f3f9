"""Processes the demo and the end-to-end tests start: the emulator and a whole Airflow (standalone).

Every process runs in its own session and is stopped with its whole process group, on success, failure
or Ctrl-C, so nothing outlives the demo or a test.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from voucherify_provider.emulator.server import free_port

VENV_BIN = Path(sys.executable).parent


class ManagedProcess:
    """A child process in its own process group, logged to a file, stopped with all its children."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.cmd, self.env, self.log_path = cmd, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
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
            # the leader is gone; children in the group may linger
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``check()`` until it returns something truthy; raise naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
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


class AirflowStack:
    """``airflow standalone`` (scheduler, dag-processor, triggerer, api-server; SQLite; LocalExecutor)."""

    def __init__(self, home: Path, dags_folder: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
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
            **(env or {}),
        }
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        self.process = ManagedProcess([str(VENV_BIN / "airflow"), "standalone"], self.env, home / "standalone.log")

    def __enter__(self) -> AirflowStack:
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        self.process.start()
        try:
            wait_until(self._healthy, 180, "Airflow standalone to become healthy", interval=1)
        except BaseException:
            self.process.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.process.stop()

    def _healthy(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"airflow standalone exited; see {self.process.log_path}")
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

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the metadata database (SQLite) directly."""
        with sqlite3.connect(self.home / "airflow.db", timeout=30) as con:
            return list(con.execute(sql, tuple(params)))

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 180) -> None:
        """Wait until the dag-processor has serialized every DAG."""
        wanted = set(dag_ids)

        def parsed() -> bool:
            rows = self.query("SELECT dag_id FROM serialized_dag")
            return wanted <= {r[0] for r in rows}

        wait_until(parsed, timeout, f"DAGs {sorted(wanted)} to be parsed", interval=1)

    def backfill(self, dag_id: str, from_date: str, to_date: str, *extra: str) -> None:
        """``airflow backfill create`` for a DAG, retried while SQLite is locked by the scheduler."""
        args = ("backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date, *extra)
        for attempt in range(1, 11):
            try:
                self.cli(*args)
                return
            except RuntimeError as err:
                if "database is locked" not in str(err) or attempt == 10:
                    raise
                time.sleep(attempt)

    def run_states(self, dag_ids: Iterable[str]) -> list[tuple[str, str, str]]:
        """(dag_id, run_id, state) of every run of the DAGs."""
        ids = list(dag_ids)
        marks = ",".join("?" * len(ids))
        return [(r[0], r[1], r[2]) for r in
                self.query(f"SELECT dag_id, run_id, state FROM dag_run WHERE dag_id IN ({marks})", ids)]

    def wait_for_runs(self, dag_ids: Iterable[str], expected: int, timeout: float = 900) -> list[tuple[str, str, str]]:
        """Wait until ``expected`` runs exist and none is queued or running; return their states."""
        ids = list(dag_ids)

        def finished() -> list[tuple[str, str, str]] | None:
            if not self.process.alive():
                raise RuntimeError(f"airflow standalone exited; see {self.process.log_path}")
            states = self.run_states(ids)
            done = [s for s in states if s[2] in ("success", "failed")]
            return states if len(done) >= expected and len(done) == len(states) else None

        return list(wait_until(finished, timeout, f"{expected} runs of {ids} to finish", interval=2))
