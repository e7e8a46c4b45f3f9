"""A whole Airflow (standalone, on PostgreSQL) running the example DAGs against an emulator whose data covers the last
week, so runs triggered *now* (UI, REST, CLI) land real rows. Backs the UI and REST trigger tests
(tests/test_ui_and_rest_triggers.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness.paths import EXAMPLE_DAGS
from harness.services import PostgresServer
from harness.stack import AirflowStack, EmulatorProcess, wait_until

UTC = timezone.utc
OBJECTS = ("redemption", "points_expiration")  # one windowed DAG, one snapshot DAG


@dataclass
class RunningStack:
    """The emulator, the Airflow stack, the landing folder and a REST client with a token."""

    emulator: EmulatorProcess
    airflow: AirflowStack
    lake: Path
    today: datetime

    @property
    def base_url(self) -> str:
        """The api-server (UI and REST)."""
        return f"http://127.0.0.1:{self.airflow.port}"

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API (``/api/v2/...``) with a token; return the JSON body, raising on errors."""
        return self.airflow.api(method, path, **kwargs)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Wait until a DAG run finishes; return it (fails fast if the stack dies)."""
        def finished() -> dict[str, Any] | None:
            self.airflow.check_alive()
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        return dict(wait_until(finished, timeout, f"run {run_id} of {dag_id}", interval=1))

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Final state per task (mapped tasks: every map index)."""
        tis = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in tis}

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """A task's return value, through the REST API."""
        entry = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                         params={"map_index": map_index, "deserialize": True})
        return entry["value"]


def start_stack(workdir: Path) -> Iterator[RunningStack]:
    """Start the emulator, PostgreSQL and Airflow; yield; stop them all (also on failure).

    PostgreSQL, not SQLite: the UI's Backfill option creates its runs while the scheduler writes, which
    Airflow refuses on SQLite now and then ("database is locked ... Backfill creation is not supported on
    SQLite under concurrent access"), as it would for a user.
    """
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    week_ago, tomorrow = today - timedelta(days=7), today + timedelta(days=1)
    with EmulatorProcess(workdir, scale=700, extra_args=["--start", week_ago.isoformat(), "--end",
                                                          tomorrow.isoformat()]) as emulator, \
            PostgresServer(workdir / "postgres") as postgres:
        lake = workdir / "lake"
        env = {"AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(), "VOUCHERIFY_DESTINATION": str(lake),
               "VOUCHERIFY_OBJECTS": ",".join(OBJECTS), "VOUCHERIFY_START_DATE": week_ago.date().isoformat(),
               "VOUCHERIFY_POLL_INTERVAL": "1", "VOUCHERIFY_RETRIES": "1", "VOUCHERIFY_RETRY_DELAY": "2"}
        airflow = AirflowStack(workdir / "airflow", EXAMPLE_DAGS, env, database_url=postgres.url)
        airflow.prepare(pools={"voucherify_api": 4})
        started = time.monotonic()
        with airflow:
            print(f"stack up in {time.monotonic() - started:.0f}s on {airflow.port}")
            yield RunningStack(emulator, airflow, lake, today)
