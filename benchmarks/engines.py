"""One run in this process: ``python -m benchmarks.engines ENGINE SOURCE OUT_DIR`` prints JSON.

Landing engines turn the same redemption CSV (SOURCE is its path) into zstd Parquet with the same typed
schema (baselines (b) to (d) are given that schema; pandas infers, as a hand-written PythonOperator
would). The end-to-end engines find the emulator in ``BENCH_API_URL``, ``BENCH_APP_ID`` and
``BENCH_APP_TOKEN``: ``pipeline`` creates, waits for and lands a window as the example DAG does;
``download_then_pyarrow`` (SOURCE: a DONE export of the same window) is the hand-written task it replaces;
``land_span`` (SOURCE: a number of days) exports and lands that many days at once, as a history run does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.inputs import FIELDS
from harness.process import peak_rss_mb


def _chunks(csv_path: Path) -> Any:
    """The file in 1 MiB chunks, as a download arrives."""
    with csv_path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


def _partition_writer(out: Path, policies: Any = None) -> Any:
    """The partition writer, on the destination resolved as the landing task resolves it."""
    from voucherify_provider import catalog
    from voucherify_provider.landing.destination import destination_path
    from voucherify_provider.landing.writer import PartitionWriter

    partition = destination_path(str(out), None) / "redemption" / "window_start=20240101T000000Z"
    partition.mkdir(parents=True, exist_ok=True)
    return PartitionWriter(partition, _schema(policies), metadata={},
                           distinct=catalog.OBJECTS["redemption"].distinct_fields)


def provider(csv_path: Path, out: Path) -> int:
    """The DownloadToWarehouse code path: byte stream -> typed batches -> committed Parquet partition."""
    return encode_stage(_typed_batches(csv_path), out)


def provider_hashed(csv_path: Path, out: Path) -> int:
    """The same landing with the redemption's personal-data policies (customer_name, customer_source_id
    hashed with HMAC-SHA256): what column policies cost on the hot path."""
    from voucherify_provider import catalog
    from voucherify_provider.landing.column_policies import AppliedPolicies
    from voucherify_provider.privacy import parse_policies

    policies = AppliedPolicies(parse_policies(catalog.OBJECTS["redemption"], "personal_data"),
                               b"benchmark-hash-key-0123456789abcdef")
    return encode_stage(_typed_batches(csv_path, policies), out, policies)


def provider_as_before(csv_path: Path, out: Path) -> int:
    """The landing with the writer properties it had before they were set per column (min/max and a
    dictionary attempt on every column, free text and ids included): the reference for time and file size."""
    from voucherify_provider.landing import writer

    writer.statistics_columns = lambda schema, sorted_by=None: True
    writer.dictionary_columns = lambda schema, distinct: True
    return provider(csv_path, out)


def _typed_batches(csv_path: Path, policies: Any = None) -> Any:
    """The provider's streaming parse of the file: typed batches, as the landing gets them."""
    from voucherify_provider import catalog
    from voucherify_provider.landing.stream import IterStream
    from voucherify_provider.landing.typed_csv import TypedCsvReader

    return TypedCsvReader(catalog.OBJECTS["redemption"], FIELDS, policies=policies).batches(
        IterStream(_chunks(csv_path)))


def parse_stage(csv_path: Path, _: Path) -> int:
    """Stage timing: the provider's streaming parse alone (typed batches, dropped)."""
    return sum(batch.num_rows for batch in _typed_batches(csv_path))


def _read_whole(csv_path: Path) -> Any:
    """Untimed preparation of ``encode_stage``: the typed batches, all in memory."""
    return list(_typed_batches(csv_path))


def encode_stage(batches: Any, out: Path, policies: Any = None) -> int:
    """The provider's writer (row groups, zstd, hash, commit); timed alone when given batches in memory."""
    writer = _partition_writer(out, policies)
    part = writer.part("part-bench.parquet")
    for batch in batches:
        part.write(batch)
    writer.add(part.close())
    return int(writer.commit({"export_id": "bench"})["rows"])


def _schema(policies: Any = None) -> Any:
    from voucherify_provider import catalog
    from voucherify_provider.landing.typed_csv import landed_schema

    return landed_schema(catalog.OBJECTS["redemption"], FIELDS, policies)


def pandas_baseline(csv_path: Path, out: Path) -> int:
    """(a) pandas read_csv + to_parquet, as a hand-written PythonOperator would."""
    import pandas as pd

    frame = pd.read_csv(csv_path, header=0, names=FIELDS)
    frame.to_parquet(out / "pandas.parquet", compression="zstd", index=False)
    return len(frame)


def pyarrow_baseline(csv_path: Path, out: Path) -> int:
    """(b) pyarrow one-shot read_csv + write_table with the same schema."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = _schema()
    table = pacsv.read_csv(
        csv_path, read_options=pacsv.ReadOptions(column_names=FIELDS, skip_rows=1),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True, null_values=[""]),
    )
    pq.write_table(table, out / "pyarrow.parquet", compression="zstd")
    return int(table.num_rows)


def duckdb_baseline(csv_path: Path, out: Path) -> int:
    """(c) DuckDB COPY ... TO parquet, typed with casts."""
    import duckdb

    columns = ", ".join(f"'{f}': 'VARCHAR'" for f in FIELDS)
    casts = {"date": "TIMESTAMPTZ", "order_amount": "DECIMAL(20,2)", "gift_amount": "DECIMAL(20,2)",
             "loyalty_points": "BIGINT"}
    select = ", ".join(f"CAST({f} AS {casts[f]}) AS {f}" if f in casts else f for f in FIELDS)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def copy(parallel: bool) -> None:
        con.execute(
            f"COPY (SELECT {select} FROM read_csv('{csv_path}', header=true, columns={{{columns}}}, "
            f"strict_mode=false, parallel={str(parallel).lower()})) TO '{out / 'duckdb.parquet'}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )

    try:
        copy(parallel=True)
    except duckdb.NotImplementedException:
        # On large files with quoted line breaks DuckDB's parallel reader gives up and asks for a
        # single-threaded read, as a user would then configure; the failed attempt's time counts.
        copy(parallel=False)
    return int(con.execute(f"SELECT count(*) FROM '{out / 'duckdb.parquet'}'").fetchone()[0])  # type: ignore[index]


def polars_baseline(csv_path: Path, out: Path) -> int:
    """(d) polars scan_csv + sink_parquet (streaming)."""
    import polars as pl

    schema = {f: pl.String for f in FIELDS}
    lazy = pl.scan_csv(csv_path, has_header=True, new_columns=FIELDS, schema_overrides=schema).with_columns(
        pl.col("date").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_zone="UTC"),
        pl.col("order_amount").cast(pl.Decimal(20, 2)), pl.col("gift_amount").cast(pl.Decimal(20, 2)),
        pl.col("loyalty_points").cast(pl.Int64),
    )
    lazy.sink_parquet(out / "polars.parquet", compression="zstd")
    return int(pl.scan_parquet(out / "polars.parquet").select(pl.len()).collect().item())


BENCH_CONN_ID = "voucherify_bench"
# The emulator's default dataset spans this week: one window over it holds every row.
BENCH_WINDOW = ("2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z")


def _use_bench_connection() -> None:
    os.environ[f"AIRFLOW_CONN_{BENCH_CONN_ID.upper()}"] = json.dumps({
        "conn_type": "voucherify", "host": os.environ["BENCH_API_URL"], "login": os.environ["BENCH_APP_ID"],
        "password": os.environ["BENCH_APP_TOKEN"]})


def bench_export_task(conn_id: str = "voucherify_default") -> Any:
    """VoucherifyCreateExportOperator for the bench window (every row of the emulator's dataset)."""
    from voucherify_provider.operators.export import VoucherifyCreateExportOperator

    return VoucherifyCreateExportOperator(task_id="export", exported_object="redemption", fields=FIELDS,
                                          window_start=BENCH_WINDOW[0], window_end=BENCH_WINDOW[1],
                                          voucherify_conn_id=conn_id)


def _done_export(create: Any) -> str:
    """The export a create task plans, made and waited for (as its deferred wait would); its id."""
    request = create.plan({})
    export = create.hook.create_export(request["exported_object"], request["fields"], request["order"],
                                       request["filters"])
    create.hook.wait_for_export(export["id"], poll_interval=0.1)
    return str(export["id"])


def _window_export(_: Path) -> str:
    """Untimed preparation of ``land_window``: the bench window's export, DONE."""
    _use_bench_connection()
    return _done_export(bench_export_task(BENCH_CONN_ID))


def land_window(export_id: str, out: Path) -> int:
    """What a small window's landing task does from ``execute`` to its commit (and the export's delete):
    connection, export lookup, destination, download, parse, encode, commit."""
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    land = VoucherifyDownloadToWarehouseOperator(
        task_id="land", export_id=export_id, destination=str(out), exported_object="redemption",
        window_start=BENCH_WINDOW[0], window_end=BENCH_WINDOW[1], voucherify_conn_id=BENCH_CONN_ID)
    return int(land.execute({})["rows"])


def pipeline(_: str, out: Path) -> int:
    """End to end as the example DAG's three tasks do it, in one process: VoucherifyCreateExportOperator's
    request for the window, the sensor's wait for DONE, then VoucherifyDownloadToWarehouseOperator."""
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    _use_bench_connection()
    land = VoucherifyDownloadToWarehouseOperator(
        task_id="land", export_id=_done_export(bench_export_task(BENCH_CONN_ID)), destination=str(out),
        exported_object="redemption", window_start=BENCH_WINDOW[0], window_end=BENCH_WINDOW[1],
        voucherify_conn_id=BENCH_CONN_ID)
    return int(land.execute({})["rows"])


def land_span(days: str, out: Path) -> int:
    """A landing of ``days`` days of redemptions from 2024-01-01: one export of the span, landed as one
    partition (one day) or split into its daily partitions (more), as a history run does."""
    from datetime import datetime, timedelta, timezone

    from voucherify_provider.operators.export import VoucherifyCreateExportOperator
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    _use_bench_connection()
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    end = start + timedelta(days=int(days))
    create = VoucherifyCreateExportOperator(task_id="export", exported_object="redemption", fields=FIELDS,
                                            order="created_at", voucherify_conn_id=BENCH_CONN_ID,
                                            window_start=start, window_end=end)
    land = VoucherifyDownloadToWarehouseOperator(
        task_id="land", export_id=_done_export(create), destination=str(out), exported_object="redemption",
        voucherify_conn_id=BENCH_CONN_ID, partition_schedule="@daily" if int(days) > 1 else None,
        window_start=start, window_end=end)
    return int(land.execute({})["rows"])


def download_then_pyarrow(export_id: str, out: Path) -> int:
    """The hand-written task: GET the DONE export, stream its file to disk, then baseline (b) on it."""
    import requests

    auth = {"X-App-Id": os.environ["BENCH_APP_ID"], "X-App-Token": os.environ["BENCH_APP_TOKEN"]}
    local = out / "export.csv"
    with requests.Session() as session:
        session.headers.update(auth)
        export = session.get(f"{os.environ['BENCH_API_URL']}/v1/exports/{export_id}", timeout=60).json()
        with session.get(export["result"]["url"], stream=True, timeout=600) as response, local.open("wb") as sink:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                sink.write(chunk)
    return pyarrow_baseline(local, out)


# Imported before the clock starts: a task already has its libraries loaded; we time the landing itself.
PRELOAD = {
    "provider": ("airflow.sdk", "pyarrow.csv", "pyarrow.parquet", "voucherify_provider.landing.writer",
                 "voucherify_provider.landing.typed_csv"),
    "parse_stage": ("airflow.sdk", "pyarrow.csv", "voucherify_provider.landing.typed_csv"),
    "provider_as_before": ("airflow.sdk", "pyarrow.csv", "pyarrow.parquet", "voucherify_provider.landing.writer",
                           "voucherify_provider.landing.typed_csv"),
    "land_window": ("airflow.sdk", "pyarrow.csv", "pyarrow.parquet", "voucherify_provider.landing.writer",
                    "voucherify_provider.landing.typed_csv", "voucherify_provider.transfers.export_to_warehouse",
                    "voucherify_provider.hooks.voucherify", "voucherify_provider.landing.plan"),
    "provider_hashed": ("airflow.sdk", "pyarrow.csv", "pyarrow.parquet", "voucherify_provider.landing.writer",
                        "voucherify_provider.landing.typed_csv", "voucherify_provider.landing.column_policies"),
    "encode_stage": ("airflow.sdk", "pyarrow.csv", "pyarrow.parquet", "voucherify_provider.landing.writer",
                     "voucherify_provider.landing.typed_csv"),
    "pandas": ("pandas", "pyarrow.parquet"), "pyarrow": ("pyarrow.csv", "pyarrow.parquet"),
    "duckdb": ("duckdb",), "polars": ("polars",),
    "pipeline": ("airflow.sdk", "pyarrow.csv", "pyarrow.parquet", "voucherify_provider.landing.writer",
                 "voucherify_provider.landing.typed_csv", "voucherify_provider.transfers.export_to_warehouse",
                 "voucherify_provider.operators.export", "voucherify_provider.hooks.voucherify"),
    "download_then_pyarrow": ("requests", "pyarrow.csv", "pyarrow.parquet"),
    "land_span": ("airflow.sdk", "pyarrow.csv", "pyarrow.parquet", "voucherify_provider.landing.writer",
                  "voucherify_provider.landing.split_landing", "voucherify_provider.transfers.export_to_warehouse",
                  "voucherify_provider.operators.export", "voucherify_provider.hooks.voucherify"),
}
LANDING: dict[str, Any] = {"provider": provider, "provider_hashed": provider_hashed,
                           "provider_as_before": provider_as_before, "land_window": land_window,
                           "pandas": pandas_baseline, "pyarrow": pyarrow_baseline,
                           "duckdb": duckdb_baseline, "polars": polars_baseline, "parse_stage": parse_stage,
                           "encode_stage": encode_stage}
# Work done before the clock starts; its result replaces SOURCE as the engine's input.
PREPARE: dict[str, Any] = {"encode_stage": _read_whole, "land_window": _window_export}
# What an Airflow task process has done before ``execute``: load plugins and listeners (the task runner).
TASK_RUNNER_STARTUP = ("pipeline", "download_then_pyarrow", "land_span", "land_window")
END_TO_END: dict[str, Any] = {"pipeline": pipeline, "download_then_pyarrow": download_then_pyarrow,
                              "land_span": land_span}


def main() -> None:
    """Run one engine and print its wall time (imports excluded), peak RSS, row count and the bytes of the
    Parquet it wrote as JSON."""
    engine, source, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    import importlib

    for module in PRELOAD[engine]:
        importlib.import_module(module)
    if engine in TASK_RUNNER_STARTUP:
        from airflow.sdk.listener import get_listener_manager
        from airflow.sdk.plugins_manager import integrate_macros_plugins

        get_listener_manager()
        integrate_macros_plugins()
    given: Any = PREPARE[engine](Path(source)) if engine in PREPARE else Path(source)
    started = time.perf_counter()
    rows = END_TO_END[engine](source, out) if engine in END_TO_END else LANDING[engine](given, out)
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    written = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    print(json.dumps({"engine": engine, "seconds": seconds, "peak_rss_mb": peak_mb, "rows": rows, "bytes": written}))


if __name__ == "__main__":
    main()
