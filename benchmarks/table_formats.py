"""Current-state table formats: one daily merge (1% of the records changed: half updates, half new) into
Delta Lake (delta-rs's MERGE) and Apache Iceberg (pyiceberg ``upsert``, SQLite catalog).

Each merge runs in a fresh process (peak RSS is its own) on a table built beforehand by another process.
pyiceberg's upsert has no "only when newer" condition; it is measured without it, which favours it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.paths import REPO_ROOT as ROOT
from harness.process import peak_rss_mb

T0 = 1_704_067_200_000  # 2024-01-01


def _orders(first: int, count: int, moment: int) -> Any:
    """``count`` order rows with the current-state table's bookkeeping columns."""
    import numpy as np
    import pyarrow as pa

    from voucherify_provider.landing.current_state import TIME

    index = np.arange(first, first + count)
    stamps = pa.array(np.full(count, moment, dtype="datetime64[ms]")).cast(TIME)
    return pa.table({
        "id": pa.array(np.char.add("ord_", index.astype(str))), "status": pa.array(np.where(index % 2, "PAID", "NEW")),
        "amount": pa.array(index % 100_000), "created_at": stamps, "updated_at": stamps, "_change_at": stamps,
        "_deleted": pa.array(np.zeros(count, dtype=bool)), "_deleted_at": pa.nulls(count, TIME),
        "_export_id": pa.array(np.full(count, "exp_bench")),
    })


def _changes(records: int) -> Any:
    import pyarrow as pa

    k = records // 100
    return pa.concat_tables([_orders(records // 2, k // 2, T0 + 86_400_000),
                             _orders(records, k - k // 2, T0 + 86_400_000)])


def build(engine: str, records: int, path: Path) -> None:
    """The table before the merge: ``records`` orders."""
    base = _orders(0, records, T0)
    if engine == "delta":
        from deltalake import write_deltalake

        write_deltalake(str(path), base)
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        path.mkdir(parents=True)
        catalog = SqlCatalog("bench", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}")
        catalog.create_namespace("voucherify")
        catalog.create_table("voucherify.order", schema=base.schema).append(base)


def merge(engine: str, records: int, path: Path) -> dict[str, Any]:
    """One daily merge; seconds and peak RSS of this process."""
    import pyarrow as pa

    changes = _changes(records)
    before_mb = peak_rss_mb()
    started = time.perf_counter()
    if engine == "delta":
        from deltalake import DeltaTable

        # The formats' own merges (newest wins) on unpartitioned tables; the provider's partitioned layout is
        # measured in benchmarks/current_state.py.
        counts = DeltaTable(str(path)).merge(
            source=pa.RecordBatchReader.from_batches(changes.schema, changes.to_batches()), predicate="t.id = s.id",
            source_alias="s", target_alias="t", streamed_exec=True).when_matched_update_all(
            predicate="s._change_at > t._change_at").when_not_matched_insert_all().execute()
        changed = counts.get("num_target_rows_updated", 0) + counts.get("num_target_rows_inserted", 0)
    else:
        from pyiceberg.catalog.sql import SqlCatalog

        table = SqlCatalog("bench", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}").load_table(
            "voucherify.order")
        result = table.upsert(changes, join_cols=["id"])
        changed = result.rows_updated + result.rows_inserted
    return {"engine": engine, "records": records, "seconds": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_merge_mb": before_mb, "rows_changed": changed}


def table_formats(sizes: list[int], runs: int, work: Path) -> list[dict[str, Any]]:
    """Median merge time and peak RSS per engine and size (``runs`` merges, each on a freshly built table)."""
    import shutil

    rows = []
    for records in sizes:
        for engine in ("delta", "iceberg"):
            measured = []
            for _ in range(runs):
                path = work / f"table-{engine}-{records}"
                shutil.rmtree(path, ignore_errors=True)
                _child("build", engine, records, path)
                measured.append(json.loads(_child("merge", engine, records, path)))
                shutil.rmtree(path, ignore_errors=True)
            measured.sort(key=lambda r: r["seconds"])
            rows.append({**measured[len(measured) // 2], "runs": runs,
                         "seconds_all": [round(r["seconds"], 3) for r in measured]})
    return rows


def _child(action: str, engine: str, records: int, path: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "benchmarks.table_formats", action, engine, str(records), str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"{action} {engine} {records}: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def main() -> None:
    """``python -m benchmarks.table_formats build|merge ENGINE RECORDS PATH``."""
    action, engine, records, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    if action == "build":
        build(engine, records, path)
    else:
        print(json.dumps(merge(engine, records, path)))


if __name__ == "__main__":
    main()
