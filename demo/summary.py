"""What landed, read back from the Parquet files themselves (and checked against each manifest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def partitions(warehouse: Path) -> list[dict[str, Any]]:
    """One row per landed partition: object, window, rows (from Parquet footers), files, bytes, mode."""
    import pyarrow.parquet as pq

    rows = []
    for manifest_path in sorted(warehouse.glob("*/window_start=*/_manifest.json")):
        folder = manifest_path.parent
        manifest = json.loads(manifest_path.read_text())
        files = sorted(folder.glob("*.parquet"))
        listed = {f["path"]: f for f in manifest["files"]}
        if {f.name for f in files} != set(listed):
            raise AssertionError(f"{folder}: files on disk differ from the manifest")
        for file in files:
            if hashlib.sha256(file.read_bytes()).hexdigest() != listed[file.name]["sha256"]:
                raise AssertionError(f"{file}: sha256 differs from the manifest")
        rows.append({
            "object": folder.parent.name,
            "window_start": folder.name.split("=", 1)[1],
            "rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "mode": manifest["mode"],
            "manifest_rows": manifest["rows"],
        })
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`partitions`, with totals per object."""
    lines = [f"{'object':<22}{'window_start':<18}{'mode':<10}{'rows':>9}{'files':>7}{'bytes':>11}"]
    lines.append("-" * len(lines[0]))
    for row in rows:
        lines.append(f"{row['object']:<22}{row['window_start']:<18}{row['mode']:<10}{row['rows']:>9}"
                     f"{row['files']:>7}{row['bytes']:>11}")
    lines.append("-" * len(lines[0]))
    objects = sorted({r["object"] for r in rows})
    total = sum(r["rows"] for r in rows)
    lines.append(f"{len(rows)} partitions of {len(objects)} objects, {total} rows, "
                 f"{sum(r['bytes'] for r in rows)} bytes of Parquet")
    return "\n".join(lines)


def current_states(warehouse: Path) -> str:
    """The current-state tables (Delta Lake) under ``<warehouse>/current``: version, live and deleted rows."""
    from deltalake import DeltaTable

    from voucherify_provider.landing.current_state import current_state_dataset

    lines = []
    for folder in sorted(p for p in (warehouse / "current").glob("*") if (p / "_delta_log").is_dir()):
        table = DeltaTable(str(folder))
        # Read with the provider's pyarrow dataset of the live files: deltalake 1.6's own Arrow readers
        # abort the interpreter at exit once pyarrow.parquet is loaded.
        deleted = current_state_dataset(str(folder)).to_table(columns=["_deleted"]).column("_deleted").to_pylist()
        months = len({p.parent.name for p in map(Path, table.file_uris())})
        lines.append(f"current state of {folder.name:<10} {len(deleted) - sum(deleted):>7} live rows, "
                     f"{sum(deleted)} marked deleted, {months} month partition(s) (Delta table version "
                     f"{table.version()}, {folder})")
    return "\n".join(lines)
