"""The production-shaped stack on one machine: PostgreSQL, Redis, moto's S3, the emulator and a Celery
Airflow (:class:`~harness.celery_stack.CeleryAirflowStack`) over the example DAGs, landing on S3.

Backs ``make demo-cluster`` (``demo/cluster.py``) and tests/test_cluster.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from harness.celery_stack import CeleryAirflowStack
from harness.paths import EXAMPLE_DAGS
from harness.services import PostgresServer, RedisServer, S3Server
from harness.stack import EmulatorProcess, wait_until

UTC = timezone.utc
WAREHOUSE_PREFIX = "warehouse"  # where in the bucket the DAGs land


@dataclass
class Cluster:
    """Everything started for one cluster run; ``airflow`` is started by the caller (``with``)."""

    emulator: EmulatorProcess
    postgres: PostgresServer
    s3: S3Server
    airflow: CeleryAirflowStack
    first_day: datetime  # first backfilled window
    today: datetime  # the scheduled run lands [today - 1 day, today); the emulator's data clock

    @property
    def backfill_days(self) -> list[str]:
        """The backfilled windows' first days (every day before yesterday)."""
        count = (self.today - self.first_day).days - 1
        return [(self.first_day + timedelta(days=k)).date().isoformat() for k in range(count)]

    def backfill(self, dag_id: str, days: list[str] | None = None, reprocess: str = "none") -> int:
        """Create a backfill of ``days`` (default: all backfill days) through the REST API, as the UI's
        Backfill dialog does; ``reprocess``: none, failed or completed. Returns its id."""
        days = days or self.backfill_days
        created = self.airflow.api("POST", "backfills", json={
            "dag_id": dag_id, "from_date": f"{days[0]}T00:00:00Z", "to_date": f"{days[-1]}T00:00:00Z",
            "run_backwards": False, "dag_run_conf": {}, "reprocess_behavior": reprocess, "max_active_runs": 4})
        return int(created["id"])

    def trigger(self, dag_id: str) -> str:
        """Trigger a run as the UI's Trigger dialog does with its defaults (Single Run: the params' default
        values as conf, logical date now, the data interval inferred); return the run id."""
        params = self.airflow.api("GET", f"dags/{dag_id}/details").get("params") or {}
        conf = {name: param.get("value") if isinstance(param, dict) else param for name, param in params.items()}
        run = self.airflow.api("POST", f"dags/{dag_id}/dagRuns", json={
            "conf": conf, "logical_date": datetime.now(UTC).isoformat(), "data_interval_start": None,
            "data_interval_end": None, "note": None, "dag_run_id": None})
        return str(run["dag_run_id"])

    def wait_until_idle(self, dag_ids: list[str], backfills: list[int], timeout: float = 1800) -> list[tuple[str, ...]]:
        """Wait until the backfills are complete and no run of these DAGs is queued or running; return
        (dag_id, run_id, run_type, state) of every run."""
        marks, ids = ",".join("?" * len(dag_ids)), ",".join("?" * len(backfills))

        def idle() -> bool:
            self.airflow.check_alive()
            busy = self.airflow.query(f"SELECT count(*) FROM dag_run WHERE dag_id IN ({marks}) "
                                      "AND state IN ('queued', 'running')", dag_ids)[0][0]
            open_backfills = self.airflow.query(
                f"SELECT count(*) FROM backfill WHERE completed_at IS NULL AND id IN ({ids})", backfills)[0][0]
            return busy == 0 and open_backfills == 0

        wait_until(idle, timeout, "the backfills and runs to finish", interval=3)
        return [tuple(r) for r in self.airflow.query(
            f"SELECT dag_id, run_id, run_type, state FROM dag_run WHERE dag_id IN ({marks}) ORDER BY dag_id, run_id",
            dag_ids)]


@contextmanager
def cluster_services(workdir: Path, *, objects: list[str], days: int, app_token: str = "cluster-demo-key-0001",
                     scale: int = 700, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """Start PostgreSQL, Redis, moto's S3, the emulator (data over the backfill and yesterday, clock at
    today 00:00 UTC) and prepare (not start) the Celery Airflow stack; stop everything on exit."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=days + 1)
    with ExitStack() as stack:
        postgres = stack.enter_context(PostgresServer(workdir))
        redis = stack.enter_context(RedisServer(workdir))
        s3 = stack.enter_context(S3Server(workdir))
        emulator = stack.enter_context(EmulatorProcess(workdir, app_token=app_token, scale=scale, extra_args=[
            "--start", first.isoformat(), "--end", (today + timedelta(days=1)).isoformat(),
            "--in-progress-seconds", "2"]))
        # Fixed data: what a run exports does not depend on when it runs, so any run can be checked.
        emulator.admin("PATCH", "config", json={"data_clock": today.isoformat()})
        airflow = CeleryAirflowStack(workdir / "airflow", EXAMPLE_DAGS, database_url=postgres.url,
                                     broker_url=redis.url, env={
            "AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(),
            "AIRFLOW_CONN_AWS_LAKE": s3.connection(),
            "VOUCHERIFY_DESTINATION": f"s3://{s3.bucket}/{WAREHOUSE_PREFIX}",
            "VOUCHERIFY_DESTINATION_CONN_ID": "aws_lake",
            "VOUCHERIFY_OBJECTS": ",".join(objects),
            "VOUCHERIFY_START_DATE": first.date().isoformat(),
            "VOUCHERIFY_POLL_INTERVAL": "1",
            "VOUCHERIFY_RETRY_DELAY": "5",
            # Task logs go to the bucket, so the UI shows them whichever worker ran the task.
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{s3.bucket}/airflow-logs",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "aws_lake",
            **(env or {}),
        })
        airflow.prepare(pools={"voucherify_api": 4})
        yield Cluster(emulator, postgres, s3, airflow, first, today)
