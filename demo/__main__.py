"""``make demo``: the emulator, a real Airflow, the example DAGs backfilled over a few days, Parquet landed.

Re-running is safe: the Airflow home under ``.demo/`` is recreated, and landing replaces partitions.
"""

from __future__ import annotations

import shutil
import sys
import time

from demo.summary import current_states, partitions, render
from harness.paths import EXAMPLE_DAGS, REPO_ROOT
from harness.stack import AirflowStack, EmulatorProcess

WORK = REPO_ROOT / ".demo"
WAREHOUSE = REPO_ROOT / "warehouse"
FIRST_DAY, LAST_DAY = "2024-01-01", "2024-01-03"


def main() -> int:
    """Run the demo; return the process exit code."""
    from voucherify_provider import catalog

    started = time.monotonic()
    shutil.rmtree(WORK / "airflow", ignore_errors=True)
    WAREHOUSE.mkdir(exist_ok=True)
    dag_ids = [f"voucherify_{name}" for name in catalog.OBJECTS]
    print(f"Starting the Voucherify emulator and Airflow (logs in {WORK})...", flush=True)
    with EmulatorProcess(WORK, extra_args=["--in-progress-seconds", "2"]) as emulator:
        env = {
            "AIRFLOW_CONN_VOUCHERIFY_DEFAULT": emulator.connection(),
            "VOUCHERIFY_DESTINATION": str(WAREHOUSE),
            "VOUCHERIFY_START_DATE": FIRST_DAY,
            "VOUCHERIFY_END_DATE": LAST_DAY,
            "VOUCHERIFY_POLL_INTERVAL": "1",
            "VOUCHERIFY_RETRY_DELAY": "5",
        }
        airflow = AirflowStack(WORK / "airflow", EXAMPLE_DAGS, env)
        airflow.prepare(pools={"voucherify_api": 4})
        backfills = [airflow.backfill(dag_id, FIRST_DAY, LAST_DAY) for dag_id in dag_ids]
        with airflow:
            print(f"Airflow is up on http://127.0.0.1:{airflow.port} ; emulator on {emulator.base_url}", flush=True)
            print(f"Backfilling {len(dag_ids)} DAGs over {FIRST_DAY}..{LAST_DAY} under the scheduler...", flush=True)
            states = airflow.wait_for_backfills(backfills)
        exports = emulator.exports()
    failed = [s for s in states if s[2] != "success"]
    if len(states) != len(dag_ids) * 3:
        failed.append(("all", f"{len(states)} runs instead of {len(dag_ids) * 3}", "missing"))
    print(render(partitions(WAREHOUSE)))
    print(current_states(WAREHOUSE))
    left = [e for e in exports if not e["deleted"]]
    print(f"\nVoucherify exports: {len(exports)} made, {len(exports) - len(left)} deleted once landed, {len(left)} "
          "left in the project")
    print(f"\n{len(states) - len(failed)} of {len(states)} DAG runs succeeded in {time.monotonic() - started:.0f}s; "
          f"Parquet under {WAREHOUSE}")
    for dag_id, run_id, state in failed:
        print(f"FAILED: {dag_id} {run_id} ({state}); task logs under {WORK / 'airflow' / 'logs'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
