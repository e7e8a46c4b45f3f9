"""The example DAGs: integrity (parsed like the dag-processor does) and runs in real Airflow."""

from __future__ import annotations

import itertools
import json
import socket
import sys
from datetime import datetime, timedelta, timezone

import pyarrow.dataset as ds
import pytest

from harness.paths import EXAMPLE_DAGS
from tests.support.dag_files import load_example_dags
from voucherify_provider import catalog

UTC = timezone.utc


@pytest.mark.unit
def test_dagbag_integrity_without_network(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    def no_network(*args, **kwargs):
        raise AssertionError("a DAG file opened a network connection at parse time")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    before = set(sys.modules)
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert bag.import_errors == {}  # DagBag also rejects cycles as import errors
    history = [f"voucherify_{name}_history" for name, obj in catalog.OBJECTS.items() if obj.windowable]
    assert sorted(bag.dag_ids) == sorted([f"voucherify_{name}" for name in catalog.OBJECTS] + history
                                         + ["voucherify_erasure"])
    erasure = bag.dags["voucherify_erasure"]  # manual only: an erasure request names its customers
    assert erasure.timetable.__class__.__name__ == "NullTimetable" and "erasure" in (erasure.doc_md or "")
    assert sorted(erasure.task_dict) == sorted(f"erase_{o.name}" for o in catalog.OBJECTS.values() if o.customer_field)
    for dag in (d for d in bag.dags.values() if d is not erasure):
        assert dag.doc_md and "backfill" in dag.doc_md.lower(), dag.dag_id
        assert dag.timetable.__class__.__name__ == "CronDataIntervalTimetable"
        assert dag.max_active_runs >= 1 and "voucherify" in dag.tags
    heavy = {m for m in set(sys.modules) - before if m.split(".")[0] in ("pandas", "pyarrow")}
    assert heavy == set(), f"parsing the DAGs imported {sorted(heavy)}"


@pytest.mark.unit
@pytest.mark.parametrize(("span", "history_start", "first", "last", "timetable"), [
    ("month", "2022-03-15", "2022-03-01", "2024-01-01", "CronDataIntervalTimetable"),
    ("quarter", "2023-01-01", "2023-01-01", "2024-01-01", "CronDataIntervalTimetable"),
    ("all", "2021-06-01", "2021-06-01", "2024-01-01", "DeltaDataIntervalTimetable"),
])
def test_history_dags_end_where_the_daily_dags_start(monkeypatch, span, history_start, first, last, timetable):
    """History intervals start on the boundary at or before the history start and end by the daily DAGs'
    start: history and daily runs meet without a gap or an overlap (the interval after is skipped)."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VOUCHERIFY_START_DATE", "2024-01-01")
    monkeypatch.setenv("VOUCHERIFY_HISTORY_START", history_start)
    monkeypatch.setenv("VOUCHERIFY_HISTORY_SPAN", span)
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["voucherify_order_history"]
    assert (dag.start_date.date().isoformat(), dag.end_date.date().isoformat()) == (first, last)
    assert dag.timetable.__class__.__name__ == timetable and dag.catchup and "history" in dag.tags
    assert [t.task_id for t in dag.tasks] == ["history_window", "export", "land", "merge_current_state"]
    assert dag.is_paused_upon_creation  # whatever the deployment's default: history starts when told
    assert dag.task_dict["land"].partition_schedule == "@daily"
    assert "voucherify_points_expiration_history" not in bag.dag_ids  # a snapshot has no history
    assert "merge_current_state" not in bag.dags["voucherify_redemption_history"].task_dict


@pytest.mark.unit
def test_history_meets_a_daily_start_inside_an_interval_and_refuses_intervals_the_daily_schedule_cannot_tile(
        monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("VOUCHERIFY_START_DATE", "2024-02-29")  # a leap day, inside February
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["voucherify_order_history"]
    assert (dag.start_date.date().isoformat(), dag.end_date.date().isoformat()) == ("2023-02-01", "2024-03-01")

    monkeypatch.setenv("VOUCHERIFY_SCHEDULE", "@weekly")  # months are not whole weeks
    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert any("not an interval boundary of '@weekly'" in str(e) for e in bag.import_errors.values())


@pytest.mark.unit
def test_every_param_resolves_with_its_default():
    """The UI's Trigger dialog submits the defaults as they open: each must be valid and not required-empty."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    for dag in bag.dags.values():
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            param.resolve()  # raises when the default does not validate against the param's schema
            types = param.schema.get("type")
            nullable = "null" in (types if isinstance(types, list) else [types])
            assert nullable or param.value not in (None, ""), f"{dag.dag_id}: param {name} opens required and empty"


@pytest.mark.unit
def test_modes_follow_the_catalog():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    for name, obj in catalog.OBJECTS.items():
        dag = bag.dags[f"voucherify_{name}"]
        expected = ("window" if obj.windowable and not obj.mutable
                    else "changes" if obj.incremental else "snapshot")
        assert expected in dag.tags, name
        assert ("windows" in dag.task_dict) == (expected != "snapshot")
        assert ("merge_current_state" in dag.task_dict) == (expected == "changes")


# --8<-- [start:example_dags]
@pytest.fixture
def example_dags(airflow_db, emu, tmp_path, monkeypatch):
    yield from load_example_dags(tmp_path, monkeypatch)


def test_windowed_dag_with_lookback_lands_each_window_once(example_dags, emu):
    module, lake = example_dags
    run = module.voucherify_redemption.test(logical_date=datetime(2024, 1, 4, tzinfo=UTC),
                                            run_conf={"lookback": 1})
    assert str(run.state) == "success"
    for day in ("02", "03"):
        partition = lake / "redemption" / f"window_start=202401{day}T000000Z"
        manifest = json.loads((partition / "_manifest.json").read_text())
        truth = emu.ground_truth("redemption", f"2024-01-{day}T00:00:00Z",
                                 f"2024-01-{int(day) + 1:02d}T00:00:00Z", ids=True)
        ids = ds.dataset(str(partition), format="parquet").to_table().column("id").to_pylist()
        assert sorted(ids) == sorted(truth["ids"]) and manifest["rows"] == truth["count"]
    assert sorted(p.name for p in (lake / "redemption").iterdir()) == [
        "window_start=20240102T000000Z", "window_start=20240103T000000Z"]
# --8<-- [end:example_dags]


@pytest.fixture
def history_dags(airflow_db, emu, tmp_path, monkeypatch):
    """The example DAGs with the daily DAGs starting in February: January is history."""
    monkeypatch.setenv("VOUCHERIFY_START_DATE", "2024-02-01")
    monkeypatch.setenv("VOUCHERIFY_HISTORY_START", "2024-01-01")
    monkeypatch.setenv("VOUCHERIFY_POLL_INTERVAL", "0.5")
    yield from load_example_dags(tmp_path, monkeypatch)


def test_history_dags_land_every_day_of_their_month(history_dags, emu):
    from deltalake import DeltaTable

    module, lake = history_dags
    days = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=k) for k in range(32)]
    for name, placed_by in (("redemption", "created"), ("customer", "last_change")):
        run = getattr(module, f"voucherify_{name}_history").test(logical_date=days[-1])  # the run after January
        assert str(run.state) == "success", name
        for start, end in itertools.pairwise(days):
            partition = lake / name / f"window_start={start.strftime('%Y%m%dT%H%M%SZ')}"
            truth = emu.ground_truth(name, start.isoformat(), end.isoformat(), ids=True, placed_by=placed_by)
            ids = ds.dataset(str(partition), format="parquet").to_table().column("id").to_pylist()
            assert sorted(ids) == sorted(truth["ids"]), (name, start)
            assert json.loads((partition / "_manifest.json").read_text())["window_end"] == end.isoformat()
    table = DeltaTable(str(lake / "current" / "customer"))
    january = emu.ground_truth("customer", days[0].isoformat(), days[-1].isoformat(), ids=True,
                               placed_by="last_change")
    assert sorted(table.to_pyarrow_table(columns=["id"]).column("id").to_pylist()) == sorted(january["ids"])
    assert len(table.history()) == 2  # created, then one merge for the month's 31 partitions

    # The scheduler also plans the interval after the last one (the DAG's end date must admit a manual run
    # of the last, whose logical date is its end): that interval is the daily DAG's, and its run skips. A
    # daily start inside an interval clips it.
    from airflow.exceptions import AirflowSkipException

    window = module.history_window.function
    whole = {"window_start": days[0].isoformat(), "window_end": days[-1].isoformat()}
    assert window(history_end="2024-02-01T00:00:00+00:00", data_interval_start=days[0],
                  data_interval_end=days[-1]) == whole
    assert window(history_end="2024-01-15T00:00:00+00:00", data_interval_start=days[0],
                  data_interval_end=days[-1])["window_end"] == days[14].isoformat()
    for start, end in ((days[-1], datetime(2024, 3, 1, tzinfo=UTC)), (None, None)):
        with pytest.raises(AirflowSkipException):
            window(history_end="2024-02-01T00:00:00+00:00", data_interval_start=start, data_interval_end=end)


def test_snapshot_dag_lands_everything(example_dags, emu):
    module, lake = example_dags
    run = module.voucherify_points_expiration.test(logical_date=datetime(2024, 1, 4, tzinfo=UTC))
    assert str(run.state) == "success"
    partition = lake / "points_expiration" / "window_start=20240103T000000Z"
    manifest = json.loads((partition / "_manifest.json").read_text())
    assert manifest["mode"] == "snapshot" and manifest["rows"] == emu.ground_truth("points_expiration")["count"]
    assert set(manifest["fields"]) == set(catalog.OBJECTS["points_expiration"].fields)


def _task_states(run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance.task_id, TaskInstance.state).filter(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id).all()
        return {task_id: str(state) for task_id, state in rows}


@pytest.mark.long  # two full change-window runs (~1 min); keeps `make test` under 15 min, CI runs it
def test_change_dag_merges_and_reconciles_on_mondays(example_dags, emu):
    from deltalake import DeltaTable

    module, lake = example_dags
    run = module.voucherify_customer.test(logical_date=datetime(2024, 1, 4, tzinfo=UTC))  # a Thursday
    states = _task_states(run)
    assert str(run.state) == "success" and states["merge_current_state"] == "success"
    assert {states[t] for t in ("export_ids", "land_ids", "mark_deleted")} == {"skipped"}
    partition = lake / "customer" / "window_start=20240103T000000Z"
    manifest = json.loads((partition / "_manifest.json").read_text())
    truth = emu.ground_truth("customer", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z", ids=True,
                             placed_by="last_change")
    assert manifest["mode"] == "changes" and manifest["rows"] == truth["count"] > 0
    table = DeltaTable(str(lake / "current" / "customer")).to_pyarrow_table()
    assert sorted(table.column("id").to_pylist()) == sorted(truth["ids"])

    run = module.voucherify_customer.test(logical_date=datetime(2024, 1, 8, tzinfo=UTC))  # ends on a Monday
    states = _task_states(run)
    assert str(run.state) == "success"
    assert {states[t] for t in ("merge_current_state", "export_ids", "land_ids", "mark_deleted")} == {"success"}
    ids = json.loads(next((lake / "_reconcile" / "customer").glob("*/_manifest.json")).read_text())
    assert ids["rows"] == len(emu.state("customer", ["id"])) and ids["fields"] == ["id", "created_at"]
    table = DeltaTable(str(lake / "current" / "customer")).to_pyarrow_table()
    assert table.num_rows > len(truth["ids"]) and not any(table.column("_deleted").to_pylist())
