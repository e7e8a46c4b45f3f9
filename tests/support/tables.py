"""Landed files built by hand for current-state tests: an id list as the reconcile's export lands it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

TIME = pa.timestamp("ms", tz="UTC")


def write_id_list(folder: Path, ids: list[tuple[str, datetime]], fields: tuple[str, ...] = ("id", "created_at")
                  ) -> ObjectStoragePath:
    """A landed full id list, as the reconcile's export lands it (Parquet + manifest)."""
    folder.mkdir(parents=True)
    columns = {"id": pa.array([i for i, _ in ids], pa.string()),
               "created_at": pa.array([c for _, c in ids], TIME)}
    pq.write_table(pa.table({f: columns[f] for f in fields}), folder / "part-0.parquet")
    (folder / "_manifest.json").write_text(json.dumps({"fields": list(fields), "files": [{"path": "part-0.parquet"}]}))
    return ObjectStoragePath(str(folder))
