"""Chaos backfill: every windowed object over several days under the real scheduler and triggerer, while
the emulator injects seeded faults. Every window lands exactly, and no secret reaches any artefact."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from harness.paths import EXAMPLE_DAGS
from harness.stack import AirflowStack, EmulatorProcess
from tests.support.warehouse_checks import assert_matches_ground_truth, files_under, secrets_found
from voucherify_provider import catalog

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.timeout(1500)]

# The objects the example DAGs land in created_at windows (the mutable ones land as snapshots).
OBJECTS = [o.name for o in catalog.OBJECTS.values() if o.windowable and not o.mutable]
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
APP_TOKEN = "chaos-secret-key-5f1e0c9a"
FAULTS = {
    "fault_rate_5xx": 0.08, "fault_rate_429": 0.05, "fault_rate_slow": 0.05, "slow_seconds": 1.5,
    "fault_rate_truncate": 0.15, "download_token_ttl_seconds": 1.0, "chunk_rows": 40,
    "in_progress_seconds_max": 4.0,
}


def test_chaos_backfill_lands_every_window_exactly(tmp_path):
    warehouse, home = tmp_path / "warehouse", tmp_path / "airflow"
    args = ["--in-progress-seconds", "1", "--end", "2024-01-04"]
    with EmulatorProcess(tmp_path, scale=600, app_token=APP_TOKEN, extra_args=args) as emulator:
        emulator.admin("PATCH", "config", json=FAULTS)
        # The first export of each object's first windows ends in ERROR: the task retry must re-export.
        emulator.admin("POST", "faults", json=[{"route": "create_export", "export_error": True, "count": 4}])
        env = {"AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(), "VOUCHERIFY_DESTINATION": str(warehouse),
               "VOUCHERIFY_OBJECTS": ",".join(OBJECTS), "VOUCHERIFY_START_DATE": DAYS[0],
               "VOUCHERIFY_END_DATE": DAYS[-1], "VOUCHERIFY_POLL_INTERVAL": "1", "VOUCHERIFY_RETRIES": "6",
               "VOUCHERIFY_RETRY_DELAY": "2"}
        airflow = AirflowStack(home, EXAMPLE_DAGS, env)
        airflow.prepare(pools={"voucherify_api": 3})
        backfills = [airflow.backfill(f"voucherify_{obj}", DAYS[0], DAYS[-1]) for obj in OBJECTS]
        with airflow:
            states = airflow.wait_for_backfills(backfills, timeout=1200)
        assert Counter(s[2] for s in states) == Counter({"success": len(OBJECTS) * len(DAYS)}), states
        seen = emulator.admin("GET", "requests")
        secrets = emulator.admin("GET", "secrets")
        exports = emulator.exports()
        rows = sum(assert_matches_ground_truth(emulator, warehouse, obj, DAYS, "2024-01-04") for obj in OBJECTS)

    injected = seen["faults_injected"]
    # The faults really happened: ERROR exports, truncations, 5xx, expired download tokens (401s).
    assert injected.get("scripted:export_error") == 4 and injected.get("random:truncate", 0) > 0
    assert any(k.startswith("random:status_5") for k in injected)
    assert any(e["route"] == "download_export" and e["status"] == 401 for e in seen["log"])
    assert rows > 0
    assert not [p for p in warehouse.rglob("*") if p.name.startswith((".tmp-", "_commit"))]
    # Every export was deleted in Voucherify: the landed ones after their commit, the ERROR ones by the
    # export task that gave up on them. The project's export list is as empty as before the backfill.
    assert len(exports) >= len(states) + 4 and [e for e in exports if not e["deleted"]] == []

    roots = [home, warehouse]
    assert secrets_found(roots, [APP_TOKEN, *secrets["download_tokens"]]) == []
    report = {"faults_injected": injected, "windows": len(states), "rows_checked": rows,
              "download_tokens": len(secrets["download_tokens"]), "files_scanned": len(files_under(roots)),
              "exports_created_and_deleted": len(exports),
              "requests": len(seen["log"])}
    print("\nchaos:", json.dumps(report))
