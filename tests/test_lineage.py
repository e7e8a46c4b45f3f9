"""OpenLineage: what a landing reports, read from the operator and from the events the OpenLineage
provider really emits when Airflow runs the task (file transport)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dag_files import DagFile, pipeline_dag
from tests.support.operators import context, done_export, land


def test_landing_reports_the_export_as_input_and_the_object_folder_as_output(emu, hook, tmp_path):
    op = land(tmp_path, done_export(emu, hook), exported_object="redemption")
    manifest = op.execute(context())
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [(emu.base_url, "export/redemption")]
    [output] = lineage.outputs
    assert (output.namespace, output.name) == ("file", str(tmp_path / "redemption"))
    assert [(f.name, f.type) for f in output.facets["schema"].fields] == [
        (c["name"], c["type"]) for c in manifest["schema"]]
    statistics = output.outputFacets["outputStatistics"]
    assert statistics.rowCount == manifest["rows"] > 0
    assert statistics.size == sum(f["bytes"] for f in manifest["files"])
    assert emu.config.app_token not in json.dumps([output.name, output.namespace, lineage.inputs[0].namespace])


@pytest.mark.timeout(300)
def test_airflow_emits_the_landing_lineage(airflow_db, emu, tmp_path):
    events_file = tmp_path / "openlineage.jsonl"
    dag = DagFile(pipeline_dag("redemption", tmp_path / "lake", with_sensor=False,
                               create=", wait_for_completion=True, poll_interval=0.2"))
    try:
        env = {**os.environ, "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "voucherify-tests"}
        done = subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "test", dag.dag_id,
                               "2024-01-03T00:00:00+00:00"], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        dag.remove()
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    complete = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(".land")]
    assert len(complete) == 1, [(e["eventType"], e["job"]["name"]) for e in events]
    [event] = complete
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [(emu.base_url, "export/redemption")]
    [output] = event["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(tmp_path / "lake" / "redemption"))
    manifest = json.loads((tmp_path / "lake" / "redemption" / "window_start=20240102T000000Z" /
                           "_manifest.json").read_text())
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == manifest["rows"]
    assert [f["name"] for f in output["facets"]["schema"]["fields"]] == manifest["fields"]
    assert emu.config.app_token not in events_file.read_text()
