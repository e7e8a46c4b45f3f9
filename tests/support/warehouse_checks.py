"""Checks on what a backfill left behind: partitions against the ground truth, and secrets in artefacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ID_FIELD = {"publication": "code"}


def landed(warehouse: Path, obj: str) -> dict[str, list[str]]:
    """Sorted ids per partition, read through each manifest; a partition holds nothing but its files."""
    out = {}
    for manifest_path in sorted((warehouse / obj).glob("window_start=*/_manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        table = ds.dataset([str(manifest_path.parent / f["path"]) for f in manifest["files"]],
                           format="parquet").to_table()
        assert table.num_rows == manifest["rows"]
        assert sorted(p.name for p in manifest_path.parent.iterdir()) == sorted(
            ["_manifest.json", *[f["path"] for f in manifest["files"]]])  # no staged, partial or stale file
        out[manifest_path.parent.name] = sorted(table.column(ID_FIELD.get(obj, "id")).to_pylist())
    return out


def assert_matches_ground_truth(emulator: Any, warehouse: Path, obj: str, days: list[str], end: str,
                                placed_by: str = "created") -> int:
    """Every day's partition equals the emulator's records created that day (``placed_by="last_change"``:
    last changed that day, as change windows land them); where the id is a unique key (not publications'
    voucher code, which repeats), no id is in two windows. Returns the rows checked."""
    partitions = landed(warehouse, obj)
    assert sorted(partitions) == [f"window_start={d.replace('-', '')}T000000Z" for d in days]
    all_ids: list[str] = []
    for index, day in enumerate(days):
        until = days[index + 1] if index + 1 < len(days) else end
        truth = emulator.admin("GET", "ground-truth", params={
            "object": obj, "start": f"{day}T00:00:00Z", "end": f"{until}T00:00:00Z", "ids": "true",
            "placed_by": placed_by})
        ids = partitions[f"window_start={day.replace('-', '')}T000000Z"]
        assert ids == sorted(truth["ids"]), (obj, day)
        all_ids.extend(ids)
    if ID_FIELD.get(obj, "id") == "id":
        assert len(all_ids) == len(set(all_ids)), obj  # no record landed twice
    return len(all_ids)


def assert_snapshots_match(emulator: Any, warehouse: Path, obj: str) -> int:
    """Every snapshot partition holds exactly the records that exist (at the emulator's data clock).
    Returns the number of partitions."""
    truth = sorted(emulator.admin("GET", "ground-truth", params={"object": obj, "ids": "true"})["ids"])
    partitions = landed(warehouse, obj)
    for name, ids in partitions.items():
        assert ids == truth, (obj, name)
    return len(partitions)


# Fields compared between a current-state table and the emulator's state.
STATE_FIELDS = {"order": ["id", "created_at", "updated_at", "status", "amount"],
                "customer": ["id", "created_at", "updated_at", "loyalty_points", "address_city"]}


def current(warehouse: Path, obj: str) -> pa.Table:
    """The current-state (Delta) table of an object."""
    from deltalake import DeltaTable

    return DeltaTable(str(warehouse / "current" / obj)).to_pyarrow_table()


def state_rows(table: pa.Table, fields: list[str]) -> list[tuple[str, ...]]:
    """Live rows of a current-state table rendered like the emulator's CSV (DuckDB does the rendering)."""
    import duckdb

    con = duckdb.connect()
    con.register("state", table)
    rendered = []
    for f in fields:
        kind = table.schema.field(f).type
        if pa.types.is_timestamp(kind):
            rendered.append(f"coalesce(strftime({f} at time zone 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'), '')")
        elif pa.types.is_decimal(kind):
            rendered.append(f"printf('%.2f', {f})")
        else:
            rendered.append(f"coalesce(cast({f} as varchar), '')")
    return sorted(con.execute(f"select {', '.join(rendered)} from state where not _deleted").fetchall())


def truth_rows(emulator: Any, obj: str, fields: list[str]) -> list[tuple[str, ...]]:
    """The emulator's current state of an object (at its data clock), rendered as in its CSV."""
    body = emulator.admin("GET", "state", params={"object": obj, "fields": ",".join(fields)})
    return sorted(tuple(row) for row in body["rows"])


def secrets_found(roots: list[Path], secrets: list[str]) -> list[tuple[str, str]]:
    """(file, secret prefix) for every secret found in any file under ``roots`` (logs, the metadata
    database with its XComs, rendered fields and trigger arguments, manifests, Parquet files)."""
    needles = [s.encode() for s in secrets if s]
    hits = []
    for path in files_under(roots):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # e.g. SQLite's -wal, removed as a last process closes the database
            continue
        hits.extend((str(path), n.decode()[:6] + "…") for n in needles if n in data)
    return hits


def files_under(roots: list[Path]) -> list[Path]:
    """Every file under the roots (a root may itself be a file)."""
    return [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]


def dictionary_encoded(path: Any) -> set[str]:
    """The columns whose first row group of the Parquet file at ``path`` uses a dictionary encoding."""
    group = pq.ParquetFile(path).metadata.row_group(0)
    return {group.column(i).path_in_schema for i in range(group.num_columns)
            if {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & set(group.column(i).encodings)}
