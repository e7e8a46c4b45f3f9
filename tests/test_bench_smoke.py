"""The benchmark suite at tiny sizes, so its code cannot rot (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.paths import REPO_ROOT


def smoke(tmp_path: Path, sections: str) -> tuple[dict[str, Any], str]:
    """Run ``benchmarks.run --smoke`` on some sections; its JSON report and its printout."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--smoke", "--sections", sections,
                           "--out", str(tmp_path / "results"), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(next((tmp_path / "results").glob("bench-smoke-*.json")).read_text()), done.stdout


def test_bench_smoke(tmp_path):
    report, stdout = smoke(tmp_path, "landing,privacy,incremental,current_state")
    engines = {(r["size"], r["engine"]) for r in report["landing"]}
    assert engines == {(s, e) for s in (2000, 5000)
                       for e in ("provider", "provider_as_before", "pyarrow", "pandas", "duckdb", "polars")}
    landed = {(r["size"], r["engine"]): r["file_mb"] for r in report["landing"]}
    assert all(landed[(s, "provider")] > 0 and landed[(s, "provider_as_before")] > 0 for s in (2000, 5000))
    assert not {"pandas", "pyarrow"} & set(report["parse_cost"]["heavy_modules_at_parse"])
    assert "vs polars" in stdout and "vs pyarrow" in stdout and "parse alone" in stdout
    window = report["small_window"]
    assert window["rows"] == 2000 and 0 < window["seconds"] < window["process_seconds"]
    assert "2000-row window" in stdout
    assert set(report["stages"]["seconds"]) == {"parse_stage", "encode_stage"}
    privacy = report["privacy"]
    assert privacy["rows"] == 5000 and privacy["time_ratio"] > 0 and "column policies at 5000 rows" in stdout
    e2e = report["end_to_end"]
    assert e2e["rows"] == 3000 and e2e["overhead"] > 0
    assert set(e2e["seconds"]) == set(e2e["process_seconds"]) == {"pipeline", "download_then_pyarrow"}
    inc = report["incremental"]
    assert inc["records"] == 2000 and 0 < inc["records_changed_in_window"] < 2000
    assert inc["changes"]["rows_landed"] == inc["records_changed_in_window"]
    assert 0 < inc["changes"]["rows_exported"] < inc["snapshot"]["rows_exported"] == inc["snapshot"]["rows_landed"]
    assert inc["changes"]["merge"][0]["num_source_rows"] == inc["changes"]["rows_landed"]
    formats = {r["engine"]: r for r in report["table_formats"]}
    assert set(formats) == {"delta", "iceberg"}
    assert formats["delta"]["rows_changed"] == formats["iceberg"]["rows_changed"] == 200  # 1% of 20k
    assert "incremental vs snapshot" in stdout and "current-state merge" in stdout
    state = {(r["action"], r["kind"]): r for r in report["current_state"]["results"]}
    assert set(state) == {("merge", "recent"), ("merge", "uniform"), ("merge", "fixed"), ("reconcile", "reconcile"),
                          ("compact", "compact"), ("legacy", "legacy")}
    for kind in ("recent", "uniform"):  # 1% of 20k: half updates, half new
        assert state[("merge", kind)]["counts"]["num_target_rows_updated"] == 100
        assert state[("merge", kind)]["counts"]["num_target_rows_inserted"] == 100
    fixed, legacy = state[("merge", "fixed")]["counts"], state[("legacy", "legacy")]["counts"]
    assert fixed["num_target_rows_updated"] == legacy["num_target_rows_updated"] == 8000
    assert fixed["num_target_rows_inserted"] == legacy["num_target_rows_inserted"] == 8000
    assert state[("reconcile", "reconcile")]["counts"]["num_target_rows_updated"] == 20  # 0.1% missing
    assert state[("compact", "compact")]["counts"] == {"files_compacted": 7, "files_written": 1}
    assert "current-state table" in stdout


# A backfill under the real scheduler and triggerer (~100 s): CI runs it; locally the crash-recovery and
# incremental-backfill suites already drive the same stack.
@pytest.mark.long
def test_bench_smoke_api_economy(tmp_path):
    report, stdout = smoke(tmp_path, "api_economy")
    api = report["api_economy"]
    assert api["runs_succeeded"] == api["runs"] == 2 and api["partitions"] == 2
    assert api["rows_landed"] == api["rows_expected"] > 0
    assert api["calls_by_route"]["create_export"] >= 2 and api["api_calls_per_window"] >= 3
    assert "API economy, 2 windows" in stdout


# Two Airflow stacks under the real scheduler (~3 min): CI runs it; locally test_history and the example
# DAGs' history test drive the same landing.
@pytest.mark.long
def test_bench_smoke_history(tmp_path):
    report, stdout = smoke(tmp_path, "history")
    load, memory = report["history"]["load"], report["history"]["memory"]
    assert load["history"]["exports_by_object"] == {"redemption": 2, "order": 2}  # two months, one export each
    assert load["per_day_measured"]["exports"] == 4 and load["per_day_measured"]["runs"] == {"success": 4}
    assert load["partitions_compared"] == {"compared": 4, "unequal": []}
    assert load["history"]["partitions"] == 2 * 60 and load["history"]["rows_landed"] > 0
    assert 0 < load["api_call_ratio"] < 1 and load["per_day_extrapolated"]["exports"] == 2 * 60
    assert memory["rows"] == {"1": 200, "30": 6000} and memory["rss_ratio_30_to_1"] > 0
    assert "history load: 2 objects, 60 days" in stdout
