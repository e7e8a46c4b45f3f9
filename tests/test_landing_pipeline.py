"""The landing pipeline's plumbing: row groups encoded on a background thread (exact sizes, failures raised
to the producer, aborts that stop it), the input stream's chunk handling, and a landing task's fixed
costs (no pandas, no filesystem registry for a local destination)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath

from tests.support.operators import done_export
from tests.support.warehouse_checks import dictionary_encoded
from voucherify_provider import catalog
from voucherify_provider.landing.encoder import AllocatorCache, BackgroundEncoder
from voucherify_provider.landing.stream import IterStream
from voucherify_provider.landing.typed_csv import arrow_schema
from voucherify_provider.landing.writer import PartitionWriter

pytestmark = pytest.mark.unit

REDEMPTION = catalog.OBJECTS["redemption"]
FIELDS = ["id", "date", "order_amount", "result"]
SCHEMA = arrow_schema(REDEMPTION, FIELDS)


def batch_of(start: int, rows: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"id": f"r_{start + i}", "result": "SUCCESS"} for i in range(rows)],
                                      schema=SCHEMA)


def test_row_groups_have_exactly_the_configured_size_and_keep_row_order(tmp_path):
    partition = ObjectStoragePath(str(tmp_path))
    writer = PartitionWriter(partition, SCHEMA, metadata={}, row_group_rows=256)
    part = writer.part("part-x.parquet")
    for start in range(0, 1000, 300):  # batches that straddle row-group boundaries
        part.write(batch_of(start, min(300, 1000 - start)))
    writer.add(part.close())
    manifest = writer.commit({})
    meta = pq.ParquetFile(tmp_path / "part-x.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [256, 256, 256, 232]
    ids = pq.read_table(tmp_path / "part-x.parquet").column("id").to_pylist()
    assert ids == [f"r_{i}" for i in range(1000)] and manifest["rows"] == 1000


class _FailingWriter:
    """A ParquetWriter stand-in that fails once ``fail_after`` row groups are written, recording their rows."""

    def __init__(self, fail_after: int = 1) -> None:
        self.written: list[int] = []
        self._fail_after = fail_after

    def write_table(self, table: pa.Table, row_group_size: int) -> None:
        if len(self.written) >= self._fail_after:
            raise OSError("disk full")
        self.written.append(table.num_rows)


def test_an_encoder_failure_reaches_the_producer():
    writer = _FailingWriter()
    encoder = BackgroundEncoder(writer, depth=1)
    table = pa.Table.from_batches([batch_of(0, 10)])
    with pytest.raises(OSError, match="disk full"):
        for _ in range(50):  # the failure surfaces on a later put, or at the latest on finish
            encoder.put(table)
        encoder.finish()
    assert writer.written == [10]
    assert not encoder._thread.is_alive()  # a failed encoder ends its thread; nothing is left running


def test_an_abort_stops_the_encoder_and_drops_the_staged_file(tmp_path):
    partition = ObjectStoragePath(str(tmp_path))
    writer = PartitionWriter(partition, SCHEMA, metadata={}, row_group_rows=100)
    part = writer.part("part-x.parquet")
    for start in range(0, 1000, 100):
        part.write(batch_of(start, 100))
    encoder_thread = part._encoder._thread
    assert encoder_thread.is_alive()
    part.abort()
    assert not encoder_thread.is_alive()
    assert list(tmp_path.iterdir()) == []


def test_input_stream_hands_out_exact_bytes_across_chunks():
    data = b"id,date\r\n" + b"".join(f"r_{i},2024-01-01\r\n".encode() for i in range(500))
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]  # chunks smaller than a line
    stream = IterStream(iter(chunks))
    assert stream.read_line() == b"id,date\r\n"
    out = bytearray()
    buffer = bytearray(1000)
    while size := stream.readinto(memoryview(buffer)):
        out += buffer[:size]
    assert bytes(out) == data[len(b"id,date\r\n") :] and stream.bytes_read == len(data) and stream.at_end()


LAND_AND_REPORT_MODULES = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timezone
    import airflow.sdk  # every task process has it
    before = set(sys.modules)
    from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

    op = VoucherifyDownloadToWarehouseOperator(
        task_id="land", export_id=sys.argv[1], destination=sys.argv[2], voucherify_conn_id="voucherify_test",
        exported_object="redemption", partition_schedule=sys.argv[3] or None)
    manifest = op.execute({"data_interval_start": datetime(2024, 1, 2, tzinfo=timezone.utc),
                           "data_interval_end": datetime(2024, 1, 3, tzinfo=timezone.utc)})
    print(json.dumps({"rows": manifest["rows"], "loaded": sorted(set(sys.modules) - before)}))
""")


@pytest.mark.parametrize("split", ["", "@hourly"])  # one partition; the day split as a history load splits
def test_a_landing_task_loads_neither_pandas_nor_the_filesystem_registry(emu, hook, tmp_path, split):
    """Fixed costs count in what a user waits for: pandas (0.6 s, pulled in by converting Python values to
    Arrow) and every provider's filesystem module (boto3 and more, for a local destination) stay unloaded."""
    done = subprocess.run([sys.executable, "-c", LAND_AND_REPORT_MODULES, done_export(emu, hook), str(tmp_path),
                           split], env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rows"] > 0
    assert len(list(tmp_path.glob("redemption/*/_manifest.json"))) == (24 if split else 1)
    loaded = report["loaded"]
    assert "pyarrow.parquet" in loaded  # the probe sees what the landing imports
    assert not [m for m in loaded if m == "pandas" or m.startswith(("boto3", "airflow.providers.amazon"))]
    landed = next(tmp_path.glob("redemption/*/part-*.parquet"))
    assert dictionary_encoded(landed) >= {"result"}  # repeated values keep their dictionary
    assert "id" not in dictionary_encoded(landed)  # a value per record: stored plain (catalog distinct_fields)


def test_the_allocator_cache_is_released_only_past_its_allowance_of_row_groups():
    resident = [1000]
    released: list[int] = []
    cache = AllocatorCache(row_groups=4, rss=lambda: resident[0], release=lambda: released.append(resident[0]))
    for grown in (100, 300, 400):  # up to 4 row groups of 100 bytes over the start: kept
        resident[0] = 1000 + grown
        cache.after_row_group(100)
    assert released == []
    resident[0] = 1401
    cache.after_row_group(100)
    assert released == [1401]
    cache.after_row_group(1000)  # a larger row group widens the allowance
    assert released == [1401]


def test_the_encoder_reports_each_written_row_group_to_its_allocator_cache():
    resident = [0]
    released: list[int] = []

    def grow() -> int:  # every row group written leaves 1 MB more resident
        resident[0] += 1 << 20
        return resident[0]

    table = pa.Table.from_batches([batch_of(0, 1000)])
    cache = AllocatorCache(row_groups=2, rss=grow, release=lambda: released.append(resident[0]))
    writer = _FailingWriter(fail_after=10)
    encoder = BackgroundEncoder(writer, cache=cache)
    for _ in range(4):
        encoder.put(table)
    encoder.finish()
    assert writer.written == [1000] * 4
    # allowance 2 x the table's bytes (tens of kB) is passed on the first check: each group releases
    assert len(released) == 4 and table.nbytes * 2 < (1 << 20)
