"""``make demo-cluster``: the example DAGs on a production-shaped Airflow (PostgreSQL, CeleryExecutor with
two workers and Redis, S3 through moto), backfilled through the REST API while everything runs, as the
UI's Backfill dialog does, plus one run triggered as the UI's Trigger button does.

``python -m demo.cluster --keep-running`` leaves the stack up afterwards (Ctrl-C stops it) to look around
in the UI. The same composition (:mod:`harness.cluster`) backs tests/test_cluster.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from harness.cluster import WAREHOUSE_PREFIX, cluster_services
from harness.paths import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    """Run the cluster demo; return the process exit code."""
    from demo.summary import current_states, partitions, render
    from voucherify_provider import catalog

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--days", type=int, default=3, help="days to backfill (before yesterday's scheduled run)")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up until Ctrl-C")
    args = parser.parse_args(argv)
    started, work = time.monotonic(), REPO_ROOT / ".demo-cluster"
    objects, failed = list(catalog.OBJECTS), []
    dag_ids = [f"voucherify_{o}" for o in objects]
    print(f"Starting PostgreSQL, Redis, S3 (moto), the emulator and Airflow with 2 Celery workers "
          f"(logs in {work})...", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    with cluster_services(work, objects=objects, days=args.days) as cluster, cluster.airflow:
        print(f"Airflow is up on http://127.0.0.1:{cluster.airflow.port} ; S3 on {cluster.s3.endpoint}", flush=True)
        backfills = [cluster.backfill(dag_id) for dag_id in dag_ids]
        print(f"Backfilling {len(dag_ids)} DAGs over {cluster.backfill_days[0]}..{cluster.backfill_days[-1]} "
              "through the REST API, beside yesterday's scheduled runs...", flush=True)
        manual = cluster.trigger("voucherify_redemption")
        runs = cluster.wait_until_idle(dag_ids, backfills)
        failed = [r for r in runs if r[3] != "success"]
        mirror = cluster.s3.mirror(WAREHOUSE_PREFIX, work / "warehouse-mirror")
        print(render(partitions(mirror)))
        print(current_states(mirror))
        print(f"\n{len(runs) - len(failed)} of {len(runs)} DAG runs succeeded (manual run {manual}) in "
              f"{time.monotonic() - started:.0f}s; Parquet under s3://{cluster.s3.bucket}/{WAREHOUSE_PREFIX} "
              f"(a copy in {mirror})")
        for dag_id, run_id, _, state in failed:
            print(f"FAILED: {dag_id} {run_id} ({state}); task logs in the UI or under {work / 'airflow'}")
        if args.keep_running:
            print("The stack keeps running; Ctrl-C stops it.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
