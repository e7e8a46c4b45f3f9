"""Checks on what a backfill left behind: partitions against the ground truth, and secrets in artefacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

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


def assert_matches_ground_truth(emulator: Any, warehouse: Path, obj: str, days: list[str], end: str) -> int:
    """Every day's partition equals the emulator's records created that day; where the id is a unique key
    (not publications' voucher code, which repeats), no id is in two windows. Returns the rows checked."""
    partitions = landed(warehouse, obj)
    assert sorted(partitions) == [f"window_start={d.replace('-', '')}T000000Z" for d in days]
    all_ids: list[str] = []
    for index, day in enumerate(days):
        until = days[index + 1] if index + 1 < len(days) else end
        truth = emulator.admin("GET", "ground-truth", params={
            "object": obj, "start": f"{day}T00:00:00Z", "end": f"{until}T00:00:00Z", "ids": "true"})
        ids = partitions[f"window_start={day.replace('-', '')}T000000Z"]
        assert ids == sorted(truth["ids"]), (obj, day)
        all_ids.extend(ids)
    if ID_FIELD.get(obj, "id") == "id":
        assert len(all_ids) == len(set(all_ids)), obj  # no record landed twice
    return len(all_ids)


def secrets_found(roots: list[Path], secrets: list[str]) -> list[tuple[str, str]]:
    """(file, secret prefix) for every secret found in any file under ``roots`` (logs, the metadata
    database with its XComs, rendered fields and trigger arguments, manifests, Parquet files)."""
    needles = [s.encode() for s in secrets if s]
    hits = []
    for path in files_under(roots):
        data = path.read_bytes()
        hits.extend((str(path), n.decode()[:6] + "…") for n in needles if n in data)
    return hits


def files_under(roots: list[Path]) -> list[Path]:
    """Every file under the roots (a root may itself be a file)."""
    return [p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
