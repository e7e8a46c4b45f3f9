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
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.celery_stack import CeleryAirflowStack
from demo.cluster import WAREHOUSE_PREFIX, Cluster, cluster_services
from demo.services import MissingService
from demo.stack import EmulatorProcess, wait_until
from tests.warehouse_checks import (
    STATE_FIELDS,
    assert_matches_ground_truth,
    assert_snapshots_match,
    current,
    files_under,
    secrets_found,
    state_rows,
    truth_rows,
)

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
class Landing:
    """A landing task try in flight on a worker."""

    dag_id: str
    run_id: str
    map_index: int
    try_number: int
    worker: str


def landing_in_flight(airflow: CeleryAirflowStack) -> Landing | None:
    """A ``land`` task running for a few seconds already (its download stalls), and the worker running it."""
    rows = airflow.query("SELECT dag_id, run_id, map_index, try_number, pid, start_date FROM task_instance "
                         "WHERE task_id = 'land' AND state = 'running' AND pid IS NOT NULL")
    for dag_id, run_id, map_index, try_number, pid, start_date in rows:
        if start_date and datetime.now(UTC) - start_date > timedelta(seconds=5):
            worker = airflow.worker_running(int(pid))
            if worker:
                return Landing(dag_id, run_id, map_index, try_number, worker)
    return None


def exports_created(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    """Every export the emulator created, through its public list endpoint."""
    headers = {"X-App-Id": emulator.app_id, "X-App-Token": emulator.app_token}
    found: list[dict[str, Any]] = []
    for page in range(1, 101):
        body = httpx.get(f"{emulator.base_url}/v1/exports", params={"limit": 100, "page": page},
                         headers=headers, timeout=30).json()
        found.extend(body["exports"])
        if len(found) >= body["total"]:
            return found
    raise AssertionError("more exports than the list endpoint pages through")


def export_key(export: dict[str, Any]) -> tuple[str, str | None]:
    """(object, window end) of an export; window end None for snapshots and id lists."""
    created = (export["parameters"].get("filters") or {}).get("created_at")
    return export["exported_object"], created["conditions"]["$before"][0] if created else None


def tries_by_key(airflow: CeleryAirflowStack) -> dict[tuple[str, str | None], int]:
    """Task tries that may create an export, keyed like :func:`export_key`."""
    rows = airflow.query(
        "SELECT ti.dag_id, ti.task_id, ti.try_number, dr.data_interval_end, dr.run_after FROM task_instance ti "
        "JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
        "WHERE ti.task_id IN ('export', 'export_ids')")
    tries: dict[tuple[str, str | None], int] = defaultdict(int)
    for dag_id, task_id, try_number, interval_end, _ in rows:
        obj = dag_id.removeprefix("voucherify_")
        windowed = task_id == "export" and obj != SNAPSHOT
        end = interval_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z") if windowed else None
        tries[(obj, end)] += int(try_number)
    return tries


def run_the_scenario(cluster: Cluster, workdir: Path) -> dict[str, Any]:
    """Start Airflow, backfill and trigger while it runs, kill a worker mid-landing; return what happened."""
    emulator, airflow = cluster.emulator, cluster.airflow
    emulator.admin("PATCH", "config", json=RANDOM_FAULTS)
    emulator.admin("POST", "faults", json=SCRIPTED_FAULTS)
    with airflow:
        backfills = [cluster.backfill(dag_id) for dag_id in DAG_IDS]
        victim = wait_until(lambda: landing_in_flight(airflow), 900, "a landing in flight on a worker", interval=1)
        airflow.kill_worker(victim.worker)
        manual = [cluster.trigger(f"voucherify_{obj}") for obj in (WINDOWED, CHANGES)]
        runs = cluster.wait_until_idle(DAG_IDS, backfills, timeout=2400)
        killed_try = airflow.query("SELECT try_number, state FROM task_instance WHERE dag_id = ? AND run_id = ? "
                                   "AND task_id = 'land' AND map_index = ?",
                                   [victim.dag_id, victim.run_id, victim.map_index])[0]
        tries = tries_by_key(airflow)
        backfill_runs = airflow.query("SELECT count(*) FROM backfill_dag_run WHERE backfill_id IN (?, ?, ?) "
                                      "AND dag_run_id IS NOT NULL", backfills)[0][0]
    seen = emulator.admin("GET", "requests")
    return {"runs": runs, "victim": victim, "killed_try": killed_try, "tries": tries, "manual": manual,
            "backfill_runs": backfill_runs, "exports": exports_created(emulator), "faults": seen["faults_injected"],
            "tokens": emulator.admin("GET", "secrets")["download_tokens"],
            "bucket": cluster.s3.mirror("", workdir / "bucket"),
            "metadata_dump": cluster.postgres.dump(workdir / "metadata.sql")}


def test_celery_cluster_on_postgres_lands_exactly_through_faults_and_a_lost_worker(tmp_path):
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(cluster_services(
                tmp_path, objects=OBJECTS, days=DAYS, app_token=APP_TOKEN, scale=600,
                env={"VOUCHERIFY_RETRIES": "5", "VOUCHERIFY_MAX_ACTIVE_RUNS": "3"}))
        except MissingService as err:
            pytest.skip(f"{err} (the production-shaped stack needs it; make installs it where apt-get works)")
        result = run_the_scenario(cluster, tmp_path)
        warehouse = result["bucket"] / WAREHOUSE_PREFIX
        days = [*cluster.backfill_days, (cluster.today - timedelta(days=1)).date().isoformat()]
        end = cluster.today.date().isoformat()
        rows = assert_matches_ground_truth(cluster.emulator, warehouse, WINDOWED, days, end)
        rows += assert_matches_ground_truth(cluster.emulator, warehouse, CHANGES, days, end, placed_by="last_change")
        snapshots = assert_snapshots_match(cluster.emulator, warehouse, SNAPSHOT)
        fields = STATE_FIELDS[CHANGES]
        assert state_rows(current(warehouse, CHANGES), fields) == truth_rows(cluster.emulator, CHANGES, fields)

    # Every run succeeded: the REST backfills, the scheduled runs and the UI-style manual runs.
    runs = result["runs"]
    assert Counter(r[3] for r in runs) == Counter({"success": len(runs)}), runs
    kinds = Counter(r[2] for r in runs)
    assert kinds == Counter({"backfill": DAYS * len(OBJECTS), "scheduled": len(OBJECTS), "manual": 2}), kinds
    assert result["backfill_runs"] == DAYS * len(OBJECTS)
    assert snapshots == DAYS + 1 and rows > 0

    # The landing whose worker was killed was retried (on the other worker) and succeeded.
    try_number, state = result["killed_try"]
    assert state == "success" and try_number > result["victim"].try_number, result["killed_try"]

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

    # Nothing staged, no lock left anywhere in the bucket; both workers ran tasks; task logs are in S3.
    bucket_files = files_under([result["bucket"]])
    leftovers = [p for p in bucket_files if p.name.startswith(".tmp-") or p.name.endswith((".staged", ".lock"))]
    assert leftovers == []
    for worker in ("worker1", "worker2"):
        assert list((tmp_path / "airflow" / worker / "logs").rglob("*.log")), f"{worker} ran no task"
    assert any("airflow-logs" in p.parts for p in bucket_files)

    # No secret in any log (every component, both workers, S3 task logs), the metadata database (XComs,
    # rendered fields, trigger arguments, task state), the Parquet files or manifests.
    roots = [tmp_path / "airflow", result["bucket"], result["metadata_dump"]]
    assert len(result["tokens"]) >= DAYS * len(OBJECTS)
    assert secrets_found(roots, [APP_TOKEN, *result["tokens"]]) == []
    print("\ncluster:", json.dumps({"runs": len(runs), "rows_checked": rows, "faults": faults,
                                    "exports": len(result["exports"]), "killed": result["victim"].worker,
                                    "files_scanned": len(files_under(roots))}))
