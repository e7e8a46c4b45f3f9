"""Current-state merges at the size of real accounts: memory and time against the table's size.

Tables of orders-shaped rows (12 columns, Voucherify-like random ids) are built by this module at a fixed
daily volume (``DAY`` records created a day, so 1M records are two months of history and 50M eight
years), in the provider's layout (creation-month partitions, files written by the provider's writer).
Each measured operation runs in a fresh process (its peak RSS is its own, from VmHWM) on a hard-linked
copy of the built table, so every run starts from the same table:

- ``recent``: 1% of the records change in a day: half updates of records created in the last 30 days,
  half new records;
- ``uniform``: the worst case, 1% again but the updates hit records uniformly over all of history;
- ``fixed``: the same day's volume whatever the table (``DAY // 2`` updates of recent records, as many
  new): what a daily run pays as the history grows;
- ``reconcile``: the full id list (id + created_at) with 0.1% of the ids missing, marked deleted;
- ``legacy``: the ``fixed`` changes through the previous release's path (delta-rs MERGE into an
  unpartitioned table), the baseline this layout replaces (only up to 10M: it needs ~0.35 GB per 1M);
- ``compact``: after 7 days of inserts with no update to ride on (7 small files in the newest month), one
  compaction.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.paths import REPO_ROOT as ROOT
from harness.process import peak_rss_mb

DAY = 16_000
MS_PER_RECORD = 86_400_000 // DAY
END_MS = 1_956_528_000_000  # 2032-01-01T00:00:00Z: the day whose changes are merged starts here
CHUNK = 1_000_000  # records generated together; their ids come from a seed per chunk, so any can be regenerated
ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyz"


def _ids(seed: int, count: int, prefix: bytes = b"ord_") -> Any:
    """``count`` random Voucherify-like ids (prefix + 16 base-36 characters), reproducible from ``seed``."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    width = len(prefix) + 16
    chars = np.frombuffer(ALPHABET, dtype=np.uint8)[rng.integers(0, 36, size=(count, 16), dtype=np.uint8)]
    data = np.hstack([np.tile(np.frombuffer(prefix, dtype=np.uint8), (count, 1)), chars]).tobytes()
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def _rows(ids: Any, created_ms: Any, changed_ms: Any | None, status: str) -> Any:
    """Rows in the current-state table's schema (without the partition column)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from voucherify_provider.landing.current_state import TIME

    n = len(ids)
    created = pa.array(created_ms.astype("datetime64[ms]")).cast(TIME)
    updated = pa.nulls(n, TIME) if changed_ms is None else pa.array(changed_ms.astype("datetime64[ms]")).cast(TIME)
    return pa.table({
        "id": ids, "source_id": pc.binary_join_element_wise("src-", ids, ""),
        "status": pa.array(np.full(n, status)),
        "amount": pa.array(created_ms % 1_000_000),
        "created_at": created, "updated_at": updated,
        "customer_id": pc.binary_join_element_wise("cust_", pa.array((created_ms % 97_531).astype(str)), ""),
        "referrer_id": pa.nulls(n, pa.string()),
        "_change_at": created if changed_ms is None else updated,
        "_deleted": pa.array(np.zeros(n, dtype=bool)), "_deleted_at": pa.nulls(n, TIME),
        "_export_id": pa.array(np.full(n, "exp_bench")),
    })


def _created(first: int, count: int, records: int) -> Any:
    import numpy as np

    return END_MS - (records - np.arange(first, first + count, dtype=np.int64)) * MS_PER_RECORD


def _history(records: int) -> Any:
    """The table's rows, a chunk at a time, oldest first (so months come in order)."""
    for first in range(0, records, CHUNK):
        count = min(CHUNK, records - first)
        yield _rows(_ids(first // CHUNK, count), _created(first, count, records), None, "NEW")


def build(records: int, path: Path) -> None:
    """The table in the provider's layout, and beside it the full id list less 0.1% (for the reconcile)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath
    from deltalake import DeltaTable

    from voucherify_provider.landing.delta_files import PARTITION, Transaction

    first = next(_history(1))
    schema = first.schema.append(pa.field(PARTITION, pa.string()))
    DeltaTable.create(str(path), schema=schema, partition_by=[PARTITION])
    tx = Transaction(ObjectStoragePath(str(path)), DeltaTable(str(path)), schema, "id")
    ids_path = path.parent / f"{path.name}-ids"
    ids_path.mkdir(parents=True, exist_ok=True)
    id_writer = pq.ParquetWriter(ids_path / "part-0.parquet", pa.schema([("id", pa.string()),
                                                                         ("created_at", first.schema.field(
                                                                             "created_at").type)]))
    writer, month = None, None
    index = 0
    for chunk in _history(records):
        months = pc.strftime(chunk.column("created_at"), format="%Y-%m")
        keep = pa.array(np.arange(index, index + chunk.num_rows) % 1000 != 999)
        id_writer.write_table(chunk.select(["id", "created_at"]).filter(keep))
        index += chunk.num_rows
        for value in pc.unique(months).to_pylist():
            part = chunk.filter(pc.equal(months, value))
            if value != month:
                if writer is not None:
                    tx.replace([], writer.close())
                writer, month = tx.writer(value), value
            assert writer is not None
            writer.write(part)
    if writer is not None:
        tx.replace([], writer.close())
    id_writer.close()
    tx.commit("bench build")
    (ids_path / "_manifest.json").write_text(json.dumps({"fields": ["id", "created_at"],
                                                         "files": [{"path": "part-0.parquet"}]}))


def build_legacy(records: int, path: Path) -> None:
    """The previous release's table: unpartitioned, written by delta-rs in 2M-row appends."""
    import pyarrow as pa
    from deltalake import write_deltalake

    pending: list[Any] = []
    for chunk in _history(records):
        pending.append(chunk)
        if sum(c.num_rows for c in pending) >= 2_000_000:
            write_deltalake(str(path), pa.concat_tables(pending), mode="append")
            pending = []
    if pending:
        write_deltalake(str(path), pa.concat_tables(pending), mode="append")


def changes(records: int, kind: str) -> Any:
    """One day's changes: ``updates`` of existing records (recent or uniform) and as many new records."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(records + len(kind))
    total = DAY if kind in ("fixed", "legacy") else records // 100
    updates = total // 2
    low = 0 if kind == "uniform" else max(0, records - 30 * DAY)
    picked = np.sort(rng.choice(np.arange(low, records), size=min(updates, records - low), replace=False))
    parts = []
    for chunk in np.unique(picked // CHUNK):
        mine = picked[picked // CHUNK == chunk]
        count = min(CHUNK, records - chunk * CHUNK)
        ids = _ids(int(chunk), count).take(pa.array(mine - chunk * CHUNK))
        created = _created(int(chunk) * CHUNK, count, records)[mine - chunk * CHUNK]
        parts.append(_rows(ids, created, np.full(len(mine), END_MS + 43_200_000), "PAID"))
    fresh = total - len(picked)
    parts.append(_rows(_ids(10_000_000 + records, fresh, b"ord_n"), END_MS + np.arange(fresh) * 1000, None, "NEW"))
    return pa.concat_tables(parts)


def measure(action: str, records: int, kind: str, path: Path) -> dict[str, Any]:
    """One operation on the table at ``path`` (in this fresh process): seconds, peak RSS, counts."""
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider import catalog
    from voucherify_provider.landing import current_state as cs

    order, table = catalog.OBJECTS["order"], ObjectStoragePath(str(path))
    rows = changes(records, kind) if action in ("merge", "legacy") else None
    before = peak_rss_mb()
    started = time.perf_counter()
    if action == "merge":
        assert rows is not None
        counts = cs.merge_rows(table, order, pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches()), "b")
    elif action == "legacy":
        from deltalake import DeltaTable

        assert rows is not None
        counts = DeltaTable(str(path)).merge(source=rows, predicate="t.id = s.id", source_alias="s", target_alias="t",
                                             streamed_exec=True).when_matched_update_all(
            predicate="s._change_at > t._change_at").when_not_matched_insert_all().execute()
    elif action == "reconcile":
        from datetime import datetime, timezone

        ids = ObjectStoragePath(str(path.parent / f"{path.name.split('.')[0]}-ids"))
        counts = cs.mark_deleted(table, order, ids, datetime.fromtimestamp(END_MS / 1000, timezone.utc), "b")
    else:
        counts = cs.compact(table, order, "b")
    seconds = time.perf_counter() - started
    return {"action": action, "kind": kind, "records": records, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": before, "files_after": _file_count(path),
            "counts": {k: v for k, v in counts.items() if isinstance(v, int) and v}}


def _file_count(path: Path) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(str(path)).file_uris())


def _child(*args: Any, in_process: bool = False) -> str:
    """One step in a fresh process (peak RSS its own); ``in_process`` (smoke runs: the code path, not the
    figures) spares the interpreter start-ups."""
    if in_process:
        return step([str(a) for a in args])
    done = subprocess.run([sys.executable, "-m", "benchmarks.current_state", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=7200)
    if done.returncode:
        raise RuntimeError(f"{args}: {done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _copy(source: Path, target: Path) -> Path:
    """A hard-linked copy: data files are never modified in place, only added and removed."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=os.link)
    return target


def _median(action: str, records: int, kind: str, built: Path, runs: int, prepare: Any = None,
            in_process: bool = False) -> dict[str, Any]:
    measured = []
    for _ in range(runs):
        copy = _copy(built, built.with_name(f"{built.name}.run"))
        if prepare is not None:
            prepare(copy)
        measured.append(json.loads(_child("measure", action, records, kind, copy, in_process=in_process)))
        shutil.rmtree(copy, ignore_errors=True)
    measured.sort(key=lambda r: r["seconds"])
    middle = measured[len(measured) // 2]
    return {**middle, "runs": runs, "seconds_all": [round(r["seconds"], 3) for r in measured],
            "peak_rss_mb_all": sorted(round(r["peak_rss_mb"]) for r in measured)}


def current_state_bench(sizes: list[int], legacy_sizes: list[int], runs: int, work: Path,
                        in_process: bool = False) -> dict[str, Any]:
    """Every scenario at every size (see the module docstring); medians of ``runs``. ``in_process``: every
    step in this process (smoke runs; peak RSS then says nothing)."""
    results: list[dict[str, Any]] = []
    builds: dict[str, float] = {}
    for records in sizes:
        built = work / f"state-{records}"
        if not (built / "_delta_log").is_dir():
            shutil.rmtree(built, ignore_errors=True)
            started = time.perf_counter()
            _child("build", records, 0, built, in_process=in_process)
            builds[str(records)] = time.perf_counter() - started
        for kind in ("recent", "uniform", "fixed"):
            results.append(_median("merge", records, kind, built, runs, in_process=in_process))
        results.append(_median("reconcile", records, "reconcile", built, runs, in_process=in_process))
        if records == sizes[0]:
            def seven_days_of_inserts(copy: Path, records: int = records) -> None:
                _child("inserts", records, 7, copy, in_process=in_process)
            results.append(_median("compact", records, "compact", built, 1, seven_days_of_inserts, in_process))
    for records in legacy_sizes:
        built = work / f"legacy-{records}"
        if not (built / "_delta_log").is_dir():
            shutil.rmtree(built, ignore_errors=True)
            _child("build_legacy", records, 0, built, in_process=in_process)
        results.append(_median("legacy", records, "legacy", built, runs, in_process=in_process))
    return {"day": DAY, "results": results, "build_seconds": builds, "ratios": ratios(results)}


def _inserts(records: int, days: int, path: Path) -> None:
    """``days`` days of new records only (no update), a merge each: each a new small file in the newest month."""
    import numpy as np
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from voucherify_provider import catalog
    from voucherify_provider.landing.current_state import merge_rows

    for day in range(days):
        rows = _rows(_ids(20_000_000 + records + day, DAY, b"ord_i"), END_MS + np.arange(DAY) * 1000, None, "NEW")
        merge_rows(ObjectStoragePath(str(path)), catalog.OBJECTS["order"],
                   pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches()), "b")


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """The fixed-volume daily merge at the largest size against the smallest (time and memory)."""
    fixed = sorted((r for r in results if r["action"] == "merge" and r["kind"] == "fixed"), key=lambda r: r["records"])
    if len(fixed) < 2:
        return {}
    small, big = fixed[0], fixed[-1]
    return {"fixed_time_largest_over_smallest": big["seconds"] / small["seconds"],
            "fixed_rss_largest_over_smallest": big["peak_rss_mb"] / small["peak_rss_mb"]}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's targets against this run's figures."""
    found: list[tuple[str, float, float]] = []
    for r in report["results"]:
        if r["action"] in ("merge", "reconcile") and r["kind"] in ("recent", "uniform", "reconcile"):
            found.append((f"{r['kind']} {r['action']} at {r['records']:,} records: peak RSS MB", r["peak_rss_mb"],
                          1024))
    for name, value in report["ratios"].items():
        found.append((f"{name.replace('_', ' ')}", value, 1.5))
    return [{"target": n, "measured": v, "limit": lim, "met": v <= lim} for n, v, lim in found]


def text(report: dict[str, Any]) -> str:
    """The section as a table."""
    lines = [f"\ncurrent-state table ({report['day']:,} records created a day), median of runs, each in a fresh "
             "process:", f"  {'operation':<18}{'records':>12}{'seconds':>9}{'peak MB':>9}{'files':>7}  counts"]
    for r in report["results"]:
        counts = ", ".join(f"{k.removeprefix('num_')}={v}" for k, v in r["counts"].items())
        lines.append(f"  {r['action'] + ' ' + r['kind']:<18}{r['records']:>12,}{r['seconds']:>9.2f}"
                     f"{r['peak_rss_mb']:>9.0f}{r['files_after']:>7}  {counts}")
    lines += [f"  {k}: {v:.2f}x" for k, v in report["ratios"].items()]
    return "\n".join(lines)


def step(args: list[str]) -> str:
    """One step (``build|build_legacy|inserts|measure ...``); its JSON result or ''."""
    action = args[0]
    if action == "measure":
        return json.dumps(measure(args[1], int(args[2]), args[3], Path(args[4])))
    if action == "inserts":
        _inserts(int(args[1]), int(args[2]), Path(args[3]))
    elif action == "build":
        build(int(args[1]), Path(args[3]))
    else:
        build_legacy(int(args[1]), Path(args[3]))
    return ""


def main() -> None:
    """``python -m benchmarks.current_state STEP ...`` (one step, this process, see :func:`step`);
    ``python -m benchmarks.current_state run SIZES RUNS WORK``: the section alone."""
    if sys.argv[1] == "run":
        report = current_state_bench([int(s) for s in sys.argv[2].split(",")], [], int(sys.argv[3]), Path(sys.argv[4]))
        report["targets"] = targets(report)
        print(text(report))
        print(json.dumps(report))
    else:
        print(step(sys.argv[1:]))


if __name__ == "__main__":
    main()
