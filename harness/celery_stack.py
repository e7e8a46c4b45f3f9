"""Airflow as it is deployed in production, on one machine: a PostgreSQL metadata database, the
CeleryExecutor with a Redis broker, and every component in its own process (api-server, scheduler,
dag-processor, triggerer, and Celery workers that each have their own home and working directory, as
separate machines would).

All settings come from the environment (``AIRFLOW__...``), so the components share what must be shared
(database, broker, JWT secret, Fernet key, execution API URL) and nothing else.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
from pathlib import Path

from harness.paths import VENV_BIN
from harness.stack import AirflowStack, ManagedProcess, ProcessExited, wait_until
from voucherify_provider.emulator.server import free_port

SERVER_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class CeleryAirflowStack(AirflowStack):
    """The four Airflow server components plus ``workers`` Celery workers, on PostgreSQL and Redis."""

    def __init__(self, home: Path, dags_folder: Path, *, database_url: str, broker_url: str,
                 env: dict[str, str] | None = None, workers: int = 2, worker_concurrency: int = 2) -> None:
        result_backend = "db+" + database_url.replace("+psycopg2", "")
        super().__init__(home, dags_folder, {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
            # Shared by every component: tokens the scheduler issues are checked by the api-server, and
            # secrets stored in the database are readable by all. Generated per stack, never logged.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW__CORE__PARALLELISM": str(workers * worker_concurrency * 2),
            "AIRFLOW__API__WORKERS": "2",
            # A worker that dies (machine lost, OOM kill) stops heart-beating its tasks: fail them over to a
            # retry after 60 s instead of the default 5 minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            **(env or {}),
        }, database_url=database_url)
        self.worker_names = [f"worker{n}" for n in range(1, workers + 1)]
        self.components: dict[str, ManagedProcess] = {}
        self.killed: set[str] = set()
        self._log_start: dict[str, int] = {}

    def _component(self, name: str) -> ManagedProcess:
        if name in self.worker_names:
            home = self.home / name  # its own AIRFLOW_HOME: logs, pid file, working directory
            home.mkdir(parents=True, exist_ok=True)
            env = {**self.env, "AIRFLOW_HOME": str(home),
                   "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            cmd = [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{name}@%h",
                   "--without-mingle", "--without-gossip"]
            return ManagedProcess(cmd, env, home / f"{name}.log", cwd=home)
        cmd = [str(VENV_BIN / "airflow"), name, *(["--port", str(self.port)] if name == "api-server" else [])]
        return ManagedProcess(cmd, self.env, self.home / f"{name}.log")

    def start(self) -> None:
        """Start every component and wait until the server ones report healthy and the workers listen."""
        self.killed.clear()
        try:
            for name in [*SERVER_COMPONENTS, *self.worker_names]:
                self.components[name] = self._component(name)
                log = self.components[name].log_path
                self._log_start[name] = log.stat().st_size if log.exists() else 0  # a restart appends
                self.components[name].start()
            wait_until(self._healthy, 240, "the Airflow components to become healthy", interval=1)
            for name in self.worker_names:
                wait_until(lambda name=name: self._worker_ready(name), 120, f"Celery {name} to be ready", interval=1)
        except BaseException:
            self.stop()
            raise

    def _worker_ready(self, name: str) -> bool:
        self.check_alive()
        with self.components[name].log_path.open("rb") as log:
            log.seek(self._log_start[name])
            return b" ready." in log.read()

    def stop(self) -> None:
        """Stop the workers first (their tasks report back), then the server components."""
        for name in [*self.worker_names, *reversed(SERVER_COMPONENTS)]:
            if name in self.components:
                self.components[name].stop()

    def check_alive(self) -> None:
        """Raise if a component exited that was not killed on purpose."""
        for name, process in self.components.items():
            if name not in self.killed and not process.alive():
                raise ProcessExited(f"airflow {name} exited; see {process.log_path}")

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker and every task process it runs, as when its machine is lost. Airflow puts each
        task process in a process group of its own, so killing the worker's group alone would leave its
        tasks running on without their supervisor."""
        import psutil

        process = self.components[name].proc
        assert process is not None
        self.killed.add(name)
        tree = psutil.Process(process.pid).children(recursive=True)
        os.killpg(process.pid, signal.SIGKILL)
        for child in tree:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        process.wait(timeout=30)
        psutil.wait_procs(tree, timeout=30)

    def worker_running(self, pid: int) -> str | None:
        """The worker whose process tree holds ``pid`` (a task process), if any."""
        import psutil

        for name in self.worker_names:
            proc = self.components[name].proc
            if name in self.killed or proc is None:
                continue
            try:
                tree = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.Error:
                continue
            if pid in tree:
                return name
        return None
