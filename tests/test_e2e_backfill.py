"""End to end under the real scheduler, dag-processor and triggerer: a week's backfill of the example
DAGs against the emulator (with export latency, deferrable waits), checked against the ground truth."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.paths import EXAMPLE_DAGS
from harness.stack import AirflowStack, EmulatorProcess
from tests.support.warehouse_checks import assert_matches_ground_truth, landed, secrets_found

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(900)]

OBJECTS = ("redemption", "publication")
DAYS = [f"2024-01-0{d}" for d in range(1, 8)]
APP_TOKEN = "e2e-secret-key-9d2b7a41"  # distinctive, so a leak anywhere is found by the scan


def test_week_backfill_matches_ground_truth_and_reruns_change_nothing(tmp_path):
    warehouse = tmp_path / "warehouse"
    dag_ids = [f"voucherify_{o}" for o in OBJECTS]
    args = ["--in-progress-seconds", "2"]
    with EmulatorProcess(tmp_path, scale=1500, app_token=APP_TOKEN, extra_args=args) as emulator:
        env = {"AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(), "VOUCHERIFY_DESTINATION": str(warehouse),
               "VOUCHERIFY_OBJECTS": ",".join(OBJECTS), "VOUCHERIFY_START_DATE": DAYS[0],
               "VOUCHERIFY_END_DATE": DAYS[-1], "VOUCHERIFY_DEFERRABLE": "true",
               "VOUCHERIFY_POLL_INTERVAL": "1", "VOUCHERIFY_RETRY_DELAY": "2"}
        airflow = AirflowStack(tmp_path / "airflow", EXAMPLE_DAGS, env)
        airflow.prepare(pools={"voucherify_api": 3})
        backfills = [airflow.backfill(dag_id, DAYS[0], DAYS[-1]) for dag_id in dag_ids]
        with airflow:
            states = airflow.wait_for_backfills(backfills)
        assert Counter(s[2] for s in states) == Counter({"success": len(dag_ids) * len(DAYS)}), states
        first = {obj: landed(warehouse, obj) for obj in OBJECTS}
        deferred = airflow.query("SELECT count(DISTINCT run_id || dag_id) FROM log "
                                 "WHERE event = 'deferred' AND task_id = 'export'")
        creates_before = emulator.admin("GET", "requests")["counts"]["create_export"]

        again = [airflow.backfill(dag_id, DAYS[0], DAYS[-1], "--reprocess-behavior", "completed")
                 for dag_id in dag_ids]
        with airflow:
            states = airflow.wait_for_backfills(again)
        assert Counter(s[2] for s in states) == Counter({"success": len(dag_ids) * len(DAYS)}), states
        second = {obj: landed(warehouse, obj) for obj in OBJECTS}
        creates_after = emulator.admin("GET", "requests")["counts"]["create_export"]
        for obj in OBJECTS:
            assert_matches_ground_truth(emulator, warehouse, obj, DAYS, "2024-01-08")
        tokens = emulator.admin("GET", "secrets")["download_tokens"]

        assert second == first  # re-running the backfill replaced every window with the same data
        assert creates_after == 2 * creates_before == 2 * len(dag_ids) * len(DAYS)
        assert deferred[0][0] == len(dag_ids) * len(DAYS)  # every run's export wait went through the triggerer
    # Task, scheduler and triggerer logs, the metadata DB (XComs, rendered fields, trigger kwargs), manifests,
    # Parquet: neither the app token nor any download token handed out appears anywhere.
    assert len(tokens) >= len(dag_ids) * len(DAYS) * 2
    assert secrets_found([tmp_path / "airflow", warehouse], [APP_TOKEN, *tokens]) == []
