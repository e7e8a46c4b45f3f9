"""DAG files written for one test into the test DAGs folder and run through real Airflow (``dag.test()``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.paths import EXAMPLE_DAGS

HEADER = """
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG, CronDataIntervalTimetable
from voucherify_provider.operators.export import VoucherifyCreateExportOperator
from voucherify_provider.sensors.export import VoucherifyExportDoneSensor
from voucherify_provider.transfers.export_to_warehouse import VoucherifyDownloadToWarehouseOperator

CONN = "voucherify_test"
"""


def dags_folder() -> Path:
    """The DAGs folder of the test AIRFLOW_HOME (conftest sets it up before Airflow is imported); ``dag.test()``
    syncs the DAGs found there."""
    return Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


class DagFile:
    """A DAG written into the DAGs folder for one test, removed afterwards."""

    def __init__(self, body: str) -> None:
        self.dag_id = f"t_{uuid.uuid4().hex[:10]}"
        self.path = dags_folder() / f"{self.dag_id}.py"
        source = HEADER + textwrap.dedent(body).replace("DAG_ID", repr(self.dag_id))
        self.path.write_text(source)
        spec = importlib.util.spec_from_file_location(self.dag_id, self.path)
        assert spec and spec.loader
        self.module = importlib.util.module_from_spec(spec)
        sys.modules[self.dag_id] = self.module
        spec.loader.exec_module(self.module)
        self.dag = self.module.dag

    def test(self, logical_date: datetime, **kwargs: Any) -> Any:
        """Run the DAG once with ``dag.test()``; return the DagRun."""
        return self.dag.test(logical_date=logical_date, **kwargs)

    def states(self, dag_run: Any) -> dict[str, str]:
        """Final state of each task of a run."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(TaskInstance.task_id, TaskInstance.state).filter(
                TaskInstance.dag_id == self.dag_id, TaskInstance.run_id == dag_run.run_id).all()
            return {task_id: str(state) for task_id, state in rows}

    def xcom(self, dag_run: Any, task_id: str) -> Any:
        """The return value a task pushed."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.query(XComModel.value).filter(
                XComModel.dag_id == self.dag_id, XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id, XComModel.key == "return_value").first()
            return None if row is None else row[0]

    def asset_events(self, uri: str) -> list[dict[str, Any]]:
        """Extras of the asset events recorded for an asset URI."""
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id).filter(
                AssetModel.uri == uri).all()
            return [dict(row[0] or {}) for row in rows]

    def remove(self) -> None:
        """Delete the file so later dag.test() calls do not parse it."""
        self.path.unlink(missing_ok=True)
        sys.modules.pop(self.dag_id, None)


def pipeline_dag(obj: str, dest: Path, *, create: str = "", sensor: str = "", land: str = "",
                 with_sensor: bool = True) -> str:
    """Source of a create >> (sensor >>) land DAG for one object, daily windows."""
    chain = "create >> wait >> land" if with_sensor else "create >> land"
    sensor_task = (f"    wait = VoucherifyExportDoneSensor(task_id='wait', export_id=create.output, "
                   f"voucherify_conn_id=CONN, poke_interval=0.2, timeout=60{sensor})\n") if with_sensor else ""
    return (
        "with DAG(DAG_ID, schedule=CronDataIntervalTimetable('@daily', timezone='UTC'),\n"
        "         start_date=datetime(2024, 1, 1, tzinfo=timezone.utc), catchup=False) as dag:\n"
        f"    create = VoucherifyCreateExportOperator(task_id='create', exported_object={obj!r}, "
        f"voucherify_conn_id=CONN{create})\n"
        f"{sensor_task}"
        f"    land = VoucherifyDownloadToWarehouseOperator(task_id='land', export_id=create.output, "
        f"destination={str(dest)!r}, exported_object={obj!r}, voucherify_conn_id=CONN{land})\n"
        f"    {chain}\n"
    )


# --8<-- [start:load_example_dags]
def load_example_dags(tmp_path: Path, monkeypatch: Any, destination: str | None = None,
                      destination_conn_id: str | None = None) -> Iterator[tuple[Any, Path]]:
    """Import the example DAG file from the test DAGs folder, configured by its environment variables for
    the emulator's connection and a destination (default: a temporary folder); yield (module, lake)."""
    monkeypatch.setenv("VOUCHERIFY_CONN_ID", "voucherify_test")
    monkeypatch.setenv("VOUCHERIFY_DESTINATION", destination or str(tmp_path / "lake"))
    if destination_conn_id:
        monkeypatch.setenv("VOUCHERIFY_DESTINATION_CONN_ID", destination_conn_id)
    monkeypatch.setenv("VOUCHERIFY_OBJECTS", "redemption,customer,points_expiration")
    monkeypatch.setenv("VOUCHERIFY_DEFERRABLE", "true")
    target = dags_folder() / "voucherify_exports.py"
    shutil.copy(EXAMPLE_DAGS / "voucherify_exports.py", target)
    spec = importlib.util.spec_from_file_location("example_voucherify_exports", target)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, tmp_path / "lake"
    target.unlink()
# --8<-- [end:load_example_dags]
