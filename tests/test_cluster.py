"""Production-shaped deployment: PostgreSQL metadata database, CeleryExecutor with two workers (Redis
broker, separate homes and working directories), scheduler, dag-processor, triggerer and api-server in
their own processes, landing on S3 (moto) with task logs there too.

While everything runs, a week's backfill of a windowed, a change-window and a snapshot DAG is created
through the REST API (as the UI's Backfill dialog does) beside the scheduled runs, UI-style manual runs are
triggered, the emulator injects 5xx, 429, truncated downloads and one ERROR export, and the worker running a
landing is SIGKILLed mid-download. Every partition must still equal the emulator's ground truth, no task
try may create two exports, nothing staged may stay visible, and no secret may reach any artefact.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from harness.celery_stack import CeleryAirflowStack
from harness.cluster import WAREHOUSE_PREFIX, Cluster, cluster_services
from harness.services import MissingService
from harness.stack import wait_until
from tests.support.warehouse_checks import (
    STATE_FIELDS,
    assert_matches_ground_truth,
    assert_snapshots_match,
    current,
    files_under,
    secrets_found,
    state_rows,
    truth_rows,
)
from voucherify_provider.utc import iso_utc

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(2700)]

UTC = timezone.utc
WINDOWED, CHANGES, SNAPSHOT = "redemption", "order", "points_expiration"
OBJECTS = [WINDOWED, CHANGES, SNAPSHOT]
DAG_IDS = [f"voucherify_{o}" for o in OBJECTS]
DAYS = 7
APP_TOKEN = "cluster-secret-key-8e41b7d2"
RANDOM_FAULTS = {"fault_rate_5xx": 0.05, "fault_rate_429": 0.04, "fault_rate_truncate": 0.1, "chunk_rows": 40}
# Consumed first: the first export created ends in ERROR (its task's retry must export again); the first
# downloads stall mid-body for a while, so a landing is in flight when its worker is killed.
SCRIPTED_FAULTS = [{"route": "create_export", "export_error": True},
                   {"route": "download_export", "stall": 45, "count": 4}]


@dataclass(frozen=True)
class InFlight:
    """A task try in flight on a worker."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    worker: str

    def final_try(self, airflow: CeleryAirflowStack) -> tuple[int, str]:
        """(try number, state) of this task instance now."""
        return airflow.query("SELECT try_number, state FROM task_instance WHERE dag_id = ? AND run_id = ? "
                             "AND task_id = ? AND map_index = ?",
                             [self.dag_id, self.run_id, self.task_id, self.map_index])[0]

    def workers_of_try(self, airflow_home: Path, try_number: int) -> list[str]:
        """The workers whose own log folder holds this try's task log."""
        wanted = {f"dag_id={self.dag_id}", f"run_id={self.run_id}", f"task_id={self.task_id}",
                  *([f"map_index={self.map_index}"] if self.map_index >= 0 else [])}
        return sorted(worker.name for worker in airflow_home.glob("worker*")
                      if any(wanted <= set(log.parts) for log in (worker / "logs").rglob(f"attempt={try_number}.log")))


def task_in_flight(airflow: CeleryAirflowStack, task_id: str, dag_id: str | None = None) -> InFlight | None:
    """A try of ``task_id`` running for a few seconds already (stalled in its download or its export wait),
    and the worker running it."""
    rows = airflow.query("SELECT dag_id, run_id, map_index, try_number, pid, start_date FROM task_instance "
                         "WHERE task_id = ? AND state = 'running' AND pid IS NOT NULL", [task_id])
    for dag, run_id, map_index, try_number, pid, start_date in rows:
        if dag_id not in (None, dag) or not start_date or datetime.now(UTC) - start_date < timedelta(seconds=4):
            continue
        worker = airflow.worker_running(int(pid))
        if worker:
            return InFlight(dag, run_id, task_id, map_index, try_number, worker)
    return None


def export_key(export: dict[str, Any]) -> tuple[str, str | None]:
    """(object, window end) of an export; window end None for snapshots and id lists."""
    created = (export["parameters"].get("filters") or {}).get("created_at")
    return export["exported_object"], created["conditions"]["$before"][0] if created else None


def tries_by_key(airflow: CeleryAirflowStack) -> dict[tuple[str, str | None], int]:
    """Task tries that may create an export, keyed like :func:`export_key`."""
    rows = airflow.query(
        "SELECT ti.dag_id, ti.task_id, ti.try_number, dr.data_interval_end FROM task_instance ti "
        "JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
        "WHERE ti.task_id IN ('export', 'export_ids')")
    tries: dict[tuple[str, str | None], int] = defaultdict(int)
    for dag_id, task_id, try_number, interval_end in rows:
        obj = dag_id.removeprefix("voucherify_")
        windowed = task_id == "export" and obj != SNAPSHOT
        end = iso_utc(interval_end) if windowed else None  # as the export filter renders the window end
        tries[(obj, end)] += int(try_number)
    return tries


def run_the_scenario(cluster: Cluster) -> dict[str, Any]:
    """Start Airflow, backfill and trigger while it runs, kill the worker of a landing in flight."""
    emulator, airflow = cluster.emulator, cluster.airflow
    emulator.admin("PATCH", "config", json=RANDOM_FAULTS)
    emulator.admin("POST", "faults", json=SCRIPTED_FAULTS)
    with airflow:
        backfills = [cluster.backfill(dag_id) for dag_id in DAG_IDS]
        landing = wait_until(lambda: task_in_flight(airflow, "land"), 900, "a landing in flight", interval=1)
        airflow.kill_worker(landing.worker)
        manual = [cluster.trigger(f"voucherify_{obj}") for obj in (WINDOWED, CHANGES)]
        runs = cluster.wait_until_idle(DAG_IDS, backfills, timeout=2400)
        backfill_runs = airflow.query("SELECT count(*) FROM backfill_dag_run WHERE backfill_id IN (?, ?, ?) "
                                      "AND dag_run_id IS NOT NULL", backfills)[0][0]
        return {"runs": runs, "manual": manual, "backfill_runs": backfill_runs, "landing": landing,
                "landing_final": landing.final_try(airflow), "tries": tries_by_key(airflow),
                "exports": emulator.exports(), "faults": emulator.admin("GET", "requests")["faults_injected"]}


def roll_out_waits_in_workers(cluster: Cluster, days: list[str]) -> dict[str, Any]:
    """A configuration roll-out: the stack restarted with export waits polling inside the workers
    (VOUCHERIFY_DEFERRABLE=false) and slow exports; ``days`` of redemptions reprocessed through the REST API;
    the worker polling one export is SIGKILLed, so its retry runs on the other worker."""
    emulator, airflow = cluster.emulator, cluster.airflow
    before = {e["id"] for e in emulator.exports()}
    airflow.env["VOUCHERIFY_DEFERRABLE"] = "false"
    emulator.admin("PATCH", "config", json={"in_progress_seconds": 25})
    with airflow:
        backfill = cluster.backfill(f"voucherify_{WINDOWED}", days, reprocess="completed")
        export = wait_until(lambda: task_in_flight(airflow, "export", f"voucherify_{WINDOWED}"), 600,
                            "an export wait in flight", interval=1)
        airflow.kill_worker(export.worker)
        runs = cluster.wait_until_idle([f"voucherify_{WINDOWED}"], [backfill], timeout=1200)
        result = {"runs": runs, "export": export, "export_final": export.final_try(airflow),
                  "created": [e for e in emulator.exports() if e["id"] not in before],
                  "remaining": emulator.remaining_exports()}
    emulator.admin("PATCH", "config", json={"in_progress_seconds": 2})
    return result


def wait_past_midnight(margin: timedelta = timedelta(minutes=12)) -> None:
    """The scenario is built around today's date (the scheduled run lands yesterday): never start it so
    close to midnight UTC that the scheduler's next run would fall inside it."""
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight - now < margin:
        time.sleep((midnight - now).total_seconds() + 5)


def test_celery_cluster_on_postgres_lands_exactly_through_faults_and_lost_workers(tmp_path):
    wait_past_midnight()
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(cluster_services(
                tmp_path, objects=OBJECTS, days=DAYS, app_token=APP_TOKEN, scale=600,
                env={"VOUCHERIFY_RETRIES": "5", "VOUCHERIFY_MAX_ACTIVE_RUNS": "3"}))
        except MissingService as err:
            pytest.skip(f"{err} (the production-shaped stack needs it; make installs it where apt-get works)")
        result = run_the_scenario(cluster)
        days = [*cluster.backfill_days, (cluster.today - timedelta(days=1)).date().isoformat()]
        rollout = roll_out_waits_in_workers(cluster, days[2:4])
        bucket = cluster.s3.mirror("", tmp_path / "bucket")
        warehouse, end = bucket / WAREHOUSE_PREFIX, cluster.today.date().isoformat()
        rows = assert_matches_ground_truth(cluster.emulator, warehouse, WINDOWED, days, end)
        rows += assert_matches_ground_truth(cluster.emulator, warehouse, CHANGES, days, end, placed_by="last_change")
        snapshots = assert_snapshots_match(cluster.emulator, warehouse, SNAPSHOT)
        fields = STATE_FIELDS[CHANGES]
        assert state_rows(current(warehouse, CHANGES), fields) == truth_rows(cluster.emulator, CHANGES, fields)
        tokens = cluster.emulator.admin("GET", "secrets")["download_tokens"]
        metadata_dump = cluster.postgres.dump(tmp_path / "metadata.sql")
    home = tmp_path / "airflow"

    # Every run succeeded: the REST backfills, the scheduled runs and the UI-style manual runs.
    runs = result["runs"]
    assert Counter(r[3] for r in runs) == Counter({"success": len(runs)}), runs
    kinds = Counter(r[2] for r in runs)
    assert kinds == Counter({"backfill": DAYS * len(OBJECTS), "scheduled": len(OBJECTS), "manual": 2}), kinds
    assert result["backfill_runs"] == DAYS * len(OBJECTS)
    assert snapshots == DAYS + 1 and rows > 0

    # The landing whose worker was killed mid-download was retried on the other worker and succeeded.
    landing = result["landing"]
    try_number, state = result["landing_final"]
    assert state == "success" and try_number > landing.try_number, result["landing_final"]
    assert landing.workers_of_try(home, landing.try_number) == [landing.worker]
    assert landing.workers_of_try(home, try_number) not in ([], [landing.worker])

    # The faults really happened.
    faults = result["faults"]
    assert faults.get("scripted:export_error") == 1 and faults.get("scripted:stall", 0) >= 1, faults
    assert faults.get("random:truncate", 0) > 0 and faults.get("random:status_429", 0) > 0, faults
    assert any(k.startswith("random:status_5") for k in faults), faults

    # No task try created two exports; the ERROR export's window was exported again by the retry.
    created = Counter(export_key(e) for e in result["exports"])
    tries = result["tries"]
    assert set(created) == {k for k, n in tries.items() if n}, (sorted(created), sorted(tries.items()))
    assert all(created[key] <= tries[key] for key in created), {k: (created[k], tries[k]) for k in created}
    errored = [export_key(e) for e in result["exports"] if e["status"] == "ERROR"]
    assert len(errored) == 1 and created[errored[0]] >= 2, errored

    # After the roll-out: the export task killed while polling was retried on the other worker, which
    # reconnected to the export the killed try had made (task state lives in the metadata database): each
    # reprocessed window has exactly one new export.
    export = rollout["export"]
    assert Counter(r[3] for r in rollout["runs"]) == Counter({"success": len(rollout["runs"])}), rollout["runs"]
    try_number, state = rollout["export_final"]
    assert state == "success" and try_number > export.try_number, rollout["export_final"]
    assert export.workers_of_try(home, try_number) not in ([], [export.worker])
    assert sorted(Counter(export_key(e)[1] for e in rollout["created"]).values()) == [1, 1], rollout["created"]

    # Every export of both phases was deleted in Voucherify once landed, or once its task gave up on it
    # (the ERROR export, the killed tries' exports their retries did not reuse): none is left there.
    assert rollout["remaining"] == [], rollout["remaining"]

    # Nothing staged, no lock left anywhere in the bucket; task logs are in S3 as well.
    bucket_files = files_under([bucket])
    leftovers = [p for p in bucket_files if p.name.startswith(".tmp-") or p.name.endswith((".staged", ".lock"))]
    assert leftovers == []
    assert any("airflow-logs" in p.parts for p in bucket_files)

    # No secret in any log (every component, both workers, S3 task logs), the metadata database (XComs,
    # rendered fields, trigger arguments, task state), the Parquet files or manifests.
    roots = [home, bucket, metadata_dump]
    assert len(tokens) >= DAYS * len(OBJECTS)
    assert secrets_found(roots, [APP_TOKEN, *tokens]) == []
    report = {"runs": len(runs), "rows_checked": rows, "faults": faults, "killed": [landing.worker, export.worker],
              "exports": len(result["exports"]) + len(rollout["created"]), "files_scanned": len(files_under(roots))}
    print("\ncluster:", json.dumps(report))
